namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>Stresses the thread pool while the clients run: floods its global queue, or blocks every pool thread for a while.</summary>
internal static class ChaosPoolStress
{
    public static async Task RunAsync(PoolStress stress, int seed, CancellationToken stop)
    {
        var random = new Random(seed);
        long sink = 0;
        try
        {
            while (!stop.IsCancellationRequested && stress != PoolStress.None)
            {
                if (stress == PoolStress.Flood)
                {
                    for (int i = 0; i < 5000; i++)
                    {
                        ThreadPool.UnsafeQueueUserWorkItem<object?>(_ => Interlocked.Increment(ref sink), null, preferLocal: false);
                    }
                }
                else
                {
                    // One more blocker than the pool has threads: all of them held at once, until the pool grows.
                    int blockers = ThreadPool.ThreadCount + 1;
                    int holdMs = random.Next(50, 300);
                    for (int i = 0; i < blockers; i++)
                    {
                        ThreadPool.UnsafeQueueUserWorkItem<object?>(_ => Thread.Sleep(holdMs), null, preferLocal: false);
                    }
                }
                await Task.Delay(random.Next(100, 700), stop);
            }
        }
        catch (OperationCanceledException)
        {
            // the clients are done
        }
    }
}
