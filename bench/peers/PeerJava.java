// PeerJava.java - Java 17 executors as peers (issue #4).
//
//   java -cp DIR PeerJava tpe|fjp ff|future|roundtrip N
//
// tpe = ThreadPoolExecutor(2, 2) on an unbounded LinkedBlockingQueue (what
// Executors.newFixedThreadPool(2) builds); fjp = new ForkJoinPool(2).
// Figures are for steady state: the same case runs once untimed first, so
// the JIT has compiled the submit and worker paths before the clock runs.
// ff uses execute() (no Future) and waits with shutdown() +
// awaitTermination(), the executor's own drain; future keeps each
// submit()'s Future and get()s them all.
import java.util.Arrays;
import java.util.concurrent.*;

public final class PeerJava {
    static final Runnable NOOP = () -> { };

    static ExecutorService newPool(String kind) {
        if (kind.equals("tpe"))
            return new ThreadPoolExecutor(2, 2, 0L, TimeUnit.MILLISECONDS,
                                          new LinkedBlockingQueue<>());
        return new ForkJoinPool(2);
    }

    static double throughput(String kind, boolean futures, int n) throws Exception {
        long t0 = System.nanoTime();
        ExecutorService ex = newPool(kind);
        if (futures) {
            Future<?>[] fs = new Future<?>[n];
            for (int i = 0; i < n; i++)
                fs[i] = ex.submit(NOOP);
            for (Future<?> f : fs)
                f.get();
        } else {
            for (int i = 0; i < n; i++)
                ex.execute(NOOP);
            ex.shutdown();
            ex.awaitTermination(1, TimeUnit.DAYS);
        }
        long t1 = System.nanoTime();
        ex.shutdown();
        return n * 1e9 / (t1 - t0);
    }

    // Nearest-rank percentile, as in peer_common.h.
    static long pct(long[] s, int p) {
        int k = (int) (((long) s.length * p + 99) / 100);
        return s[Math.max(k - 1, 0)];
    }

    static long[] roundtrips(String kind, int n) throws Exception {
        ExecutorService ex = newPool(kind);
        long[] s = new long[n];
        for (int i = 0; i < n; i++) {
            long t0 = System.nanoTime();
            ex.submit(NOOP).get();
            s[i] = System.nanoTime() - t0;
        }
        ex.shutdown();
        ex.awaitTermination(1, TimeUnit.DAYS);
        Arrays.sort(s);
        return s;
    }

    public static void main(String[] a) throws Exception {
        int n = a.length == 3 ? Integer.parseInt(a[2]) : 0;
        if (n <= 0 || !(a[0].equals("tpe") || a[0].equals("fjp"))) {
            System.err.println("usage: PeerJava tpe|fjp ff|future|roundtrip <n>");
            System.exit(2);
        }
        switch (a[1]) {
            case "ff":
            case "future": {
                boolean fut = a[1].equals("future");
                throughput(a[0], fut, n);                      // warm-up
                System.out.printf("tasks_per_s=%.1f%n", throughput(a[0], fut, n));
                break;
            }
            case "roundtrip": {
                roundtrips(a[0], n);                           // warm-up
                long[] s = roundtrips(a[0], n);
                System.out.printf("p50_ns=%d p99_ns=%d%n", pct(s, 50), pct(s, 99));
                break;
            }
            default:
                System.err.println("PeerJava: unknown case " + a[1]);
                System.exit(2);
        }
    }
}
