package troupe;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.BindException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;

import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;

/**
 * Runs an embedded Neo4j community DBMS with only a loopback Bolt connector, for
 * tests and the demo on machines without Docker or a Neo4j install.
 *
 * <pre>
 *   java -cp ... troupe.Neo4jLauncher --port 7687 --home /tmp/neo4j [--password secret] [--ignore-stdin]
 *       [--tx-pool-mb 256]
 * </pre>
 *
 * Each flag may come from the environment instead: NEO4J_BOLT_PORT, NEO4J_HOME_DIR,
 * NEO4J_PASSWORD (preferred over --password, which other users can read in ps).
 * Without a password, auth is disabled. --tx-pool-mb caps the memory all
 * transactions may hold at once (tests make it small to meet a full pool).
 *
 * The launcher stops when its stdin reaches EOF (see watchStdin), so start it with
 * stdin attached to something that stays open, or pass --ignore-stdin.
 *
 * Stdout carries exactly one line, {@code NEO4J_READY bolt://127.0.0.1:<port>},
 * because the parent process parses it; everything else goes to stderr or to
 * {@code <home>/logs}.
 */
public final class Neo4jLauncher {
    private static final String USER = "neo4j";
    // Neo4j rejects shorter passwords (dbms.security.auth_minimum_password_length).
    private static final int MIN_PASSWORD_LENGTH = 8;
    private static final long READY_TIMEOUT_MS = 60_000;
    /**
     * Distinct so the parent can tell "someone took the free port it picked for
     * us" (worth retrying on another port) from a real failure.
     */
    static final int EXIT_PORT_IN_USE = 3;

    private Neo4jLauncher() {}

    public static void main(String[] args) {
        Options opts;
        try {
            opts = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("neo4j-launcher: " + e.getMessage());
            System.exit(2);
            return;
        }

        AtomicReference<DatabaseManagementService> running = new AtomicReference<>();
        // SIGTERM, SIGINT and System.exit all end here, so the store is closed
        // cleanly and a reused --home does not need recovery on its next start.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            DatabaseManagementService dbms = running.get();
            if (dbms != null) {
                dbms.shutdown();
            }
        }, "neo4j-shutdown"));
        // Watching from the start: a parent that dies during the several seconds
        // of startup should not leave a JVM that finishes starting for nobody.
        if (!opts.ignoreStdin) {
            watchStdin();
        }

        DatabaseManagementService dbms;
        try {
            dbms = start(opts);
            running.set(dbms);
        } catch (Throwable e) {
            // Throwable, not Exception: after a half-started DBMS its non-daemon
            // threads would keep the JVM alive with nothing listening.
            System.err.println("neo4j-launcher: failed to start Neo4j");
            e.printStackTrace();
            // The stack trace is long; a parent that keeps only the tail of our
            // output should still see what went wrong.
            System.err.println("neo4j-launcher: root cause: " + rootCause(e));
            System.exit(isPortInUse(e) ? EXIT_PORT_IN_USE : 1);
            return;
        }

        try {
            if (opts.password != null) {
                setInitialPassword(dbms, opts.password);
            }
            awaitBolt(opts.port);
        } catch (Throwable e) {
            System.err.println("neo4j-launcher: Neo4j started but is not usable");
            e.printStackTrace();
            System.exit(1);
            return;
        }

        System.out.println("NEO4J_READY bolt://127.0.0.1:" + opts.port);
        System.out.flush();
        // The DBMS runs on its own non-daemon threads; main may simply return.
    }

    private static Throwable rootCause(Throwable e) {
        Throwable t = e;
        while (t.getCause() != null && t.getCause() != t) {
            t = t.getCause();
        }
        return t;
    }

    private static boolean isPortInUse(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause() == t ? null : t.getCause()) {
            // Netty's native transport reports EADDRINUSE as its own exception
            // type, not java.net.BindException, so match the message as well.
            String msg = String.valueOf(t.getMessage());
            if (t instanceof BindException || msg.contains("Address already in use")) {
                return true;
            }
        }
        return false;
    }

    private static DatabaseManagementService start(Options opts) {
        return new DatabaseManagementServiceBuilder(opts.home)
                .setConfig(BoltConnector.enabled, true)
                .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", opts.port))
                .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
                // Nothing may bind a fixed or non-loopback port: tests run several
                // instances side by side, and only Bolt is needed.
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress("127.0.0.1"))
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(GraphDatabaseSettings.routing_enabled, false)
                .setConfig(GraphDatabaseSettings.auth_enabled, opts.password != null)
                // The machine has 2 cores and runs the test suite alongside us.
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(256))
                .setConfig(GraphDatabaseSettings.memory_transaction_global_max_size, ByteUnit.mebiBytes(opts.txPoolMb))
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                // Test data is throwaway; do not spend disk and time on big
                // preallocated transaction logs.
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "false")
                // Netty's default 5 s quiet period, paid twice, made every stop take
                // over 10 s; nothing is in flight once the databases are closed.
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0)
                .build();
    }

    /**
     * The embedded API runs with full privileges, so it can replace the built-in
     * neo4j/neo4j credentials (which Bolt clients would be forced to change on
     * first use) without going through Bolt.
     */
    private static void setInitialPassword(DatabaseManagementService dbms, String password) {
        try {
            dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME).executeTransactionally(
                    "ALTER USER " + USER + " SET PLAINTEXT PASSWORD $password CHANGE NOT REQUIRED",
                    Map.of("password", password));
        } catch (RuntimeException e) {
            // A restart on an existing data directory already has this password;
            // Neo4j refuses to "change" it to itself, which is fine.
            String msg = String.valueOf(e.getMessage());
            if (!msg.contains("cannot be the same")) throw e;
        }
    }

    /**
     * Confirms that Bolt really answers a handshake, rather than trusting that
     * build() returning means the connector is bound.
     */
    private static void awaitBolt(int port) throws IOException, InterruptedException {
        long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
        IOException last = null;
        while (System.currentTimeMillis() < deadline) {
            try {
                if (boltHandshake(port)) {
                    return;
                }
            } catch (IOException e) {
                last = e;
            }
            Thread.sleep(100);
        }
        throw new IOException("Bolt on 127.0.0.1:" + port + " did not answer a handshake", last);
    }

    private static boolean boltHandshake(int port) throws IOException {
        try (Socket socket = new Socket()) {
            socket.connect(new InetSocketAddress("127.0.0.1", port), 1_000);
            socket.setSoTimeout(2_000);
            OutputStream out = socket.getOutputStream();
            out.write(new byte[] {
                (byte) 0x60, (byte) 0x60, (byte) 0xB0, (byte) 0x17, // Bolt magic preamble
                0, 8, 8, 5, // 5.8 down to 5.0
                0, 0, 4, 4, // 4.4
                0, 0, 0, 0,
                0, 0, 0, 0,
            });
            out.flush();
            byte[] reply = socket.getInputStream().readNBytes(4);
            // An all-zero reply means the server speaks none of the offered versions.
            return reply.length == 4 && (reply[0] | reply[1] | reply[2] | reply[3]) != 0;
        }
    }

    /**
     * The parent pipes our stdin and never writes to it; when the parent dies,
     * even by SIGKILL, the pipe closes and we follow instead of lingering with
     * the port and the data directory held.
     */
    private static void watchStdin() {
        Thread watcher = new Thread(() -> {
            InputStream in = System.in;
            byte[] sink = new byte[256];
            try {
                while (in.read(sink) != -1) {
                    // Discard: stdin is only a liveness signal.
                }
            } catch (IOException ignored) {
                // A broken stdin means the parent is gone, same as EOF.
            }
            System.err.println("neo4j-launcher: stdin closed, shutting down");
            System.exit(0);
        }, "neo4j-stdin-watch");
        watcher.setDaemon(true);
        watcher.start();
    }

    private static final class Options {
        int port;
        Path home;
        String password;
        boolean ignoreStdin;
        long txPoolMb = 256;

        static Options parse(String[] args) {
            Options o = new Options();
            String port = System.getenv("NEO4J_BOLT_PORT");
            String home = System.getenv("NEO4J_HOME_DIR");
            o.password = emptyToNull(System.getenv("NEO4J_PASSWORD"));
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                switch (arg) {
                    case "--port" -> port = value(args, ++i, arg);
                    case "--home" -> home = value(args, ++i, arg);
                    case "--password" -> o.password = emptyToNull(value(args, ++i, arg));
                    case "--ignore-stdin" -> o.ignoreStdin = true;
                    case "--tx-pool-mb" -> o.txPoolMb = positive(value(args, ++i, arg), arg);
                    default -> throw new IllegalArgumentException("unknown argument " + arg);
                }
            }
            if (port == null) {
                throw new IllegalArgumentException("missing --port (or NEO4J_BOLT_PORT)");
            }
            try {
                o.port = Integer.parseInt(port);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("bad port " + port);
            }
            if (o.port < 1 || o.port > 65535) {
                throw new IllegalArgumentException("bad port " + port);
            }
            if (home == null) {
                throw new IllegalArgumentException("missing --home (or NEO4J_HOME_DIR)");
            }
            o.home = Path.of(home).toAbsolutePath();
            if (o.password != null && o.password.length() < MIN_PASSWORD_LENGTH) {
                throw new IllegalArgumentException(
                        "password must have at least " + MIN_PASSWORD_LENGTH + " characters");
            }
            return o;
        }

        private static String value(String[] args, int i, String flag) {
            if (i >= args.length) {
                throw new IllegalArgumentException(flag + " needs a value");
            }
            return args[i];
        }

        private static long positive(String v, String flag) {
            try {
                long n = Long.parseLong(v);
                if (n > 0) {
                    return n;
                }
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new IllegalArgumentException(flag + " needs a positive whole number, not " + v);
        }

        private static String emptyToNull(String s) {
            return s == null || s.isEmpty() ? null : s;
        }
    }
}
