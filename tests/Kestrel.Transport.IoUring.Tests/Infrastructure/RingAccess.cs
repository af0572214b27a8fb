using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>Runs test code on a ring's own thread (the only thread that may touch its SQ), and waits for it.</summary>
internal static class RingAccess
{
    public static Task<T> RunOnRingAsync<T>(RingThread ring, Func<RingThread, T> action)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        ring.Post(_ =>
        {
            try
            {
                done.SetResult(action(ring));
            }
            catch (Exception e)
            {
                done.SetException(e);
            }
        }, null);
        return done.Task.WaitAsync(TimeSpan.FromSeconds(20));
    }

    /// <summary>Makes the ring's next <paramref name="count"/> io_uring_enter calls fail with -<paramref name="errno"/>, nothing submitted.</summary>
    public static void FailNextEnters(RingThread ring, int errno, int count = 1)
    {
        int left = count;
        ring.Ring.SimulatedEnterError = () => left-- > 0 ? -errno : 0;
    }
}
