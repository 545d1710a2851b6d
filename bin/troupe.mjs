#!/usr/bin/env node
// Entry of the `troupe` command: registers tsx so agent modules written in
// TypeScript load as they are, then hands over to the CLI.
import { register } from 'tsx/esm/api'
import { register as registerCommonJs } from 'tsx/cjs/api'

register()
// Also for CommonJS: an agents module in a package without "type": "module"
// (what `npm init -y` writes) is CommonJS, and with the ESM hooks alone Node
// refused it ("Cannot require() ES Module ... in a cycle").
registerCommonJs()
const { main } = await import('../runtime/cli/main.ts')
process.exitCode = await main(process.argv.slice(2))
