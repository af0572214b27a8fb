using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// Unbinding ends a listener's acceptor promptly whatever it is doing, cancelling all it has in the kernel: its accept
/// and the timeout of a pause (accepting waits out a shortage of descriptors). The pause is lengthened to a minute, so
/// an acceptor that waited for its pause to run out would hold the unbind far beyond the bound.
/// </summary>
public sealed class AcceptorStopTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task StopWhileThePauseCancelsTheAcceptEndsTheAcceptor()
    {
        await using var standalone = await StandaloneRing.StartAsync();
        // In one turn of the loop: the pause's cancel of the accept has not completed when the stop comes.
        var (listener, acceptor) = await BindAndPauseAsync(standalone, stopInTheSameTurn: true);
        await AssertUnbindEndsAsync(standalone.Ring, listener, acceptor);
    }

    [Fact]
    public async Task StopWhilePausedEndsTheAcceptor()
    {
        await using var standalone = await StandaloneRing.StartAsync();
        var (listener, acceptor) = await BindAndPauseAsync(standalone, stopInTheSameTurn: false);
        // A connection arriving while paused waits in the backlog: nothing accepts it.
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.EndPoint);
        var deadline = DateTime.UtcNow + Bound;
        while (await RingAccess.RunOnRingAsync(standalone.Ring, _ => acceptor.State) != AcceptorState.Paused)
        {
            Assert.True(DateTime.UtcNow < deadline, "the pause's cancel of the accept never completed");
            await RingAccess.WaitUntilSleepingAsync(standalone.Ring); // its completion has no event of its own to await
        }
        await AssertUnbindEndsAsync(standalone.Ring, listener, acceptor);
    }

    /// <summary>Binds a listener on the ring and pauses its multishot accept on the ring thread, stopping it in the same turn if asked.</summary>
    private static async Task<(IoUringConnectionListener, Acceptor)> BindAndPauseAsync(StandaloneRing standalone, bool stopInTheSameTurn)
    {
        var listener = new IoUringConnectionListener(standalone.Context, [standalone.Ring], new IPEndPoint(IPAddress.Loopback, 0));
        await listener.BindAsync();
        var acceptor = await RingAccess.RunOnRingAsync(standalone.Ring, r =>
        {
            r.Accepting.PauseDuration = TimeSpan.FromMinutes(1);
            var a = r.Accepting.AcceptorOf(listener)!;
            Assert.Equal(AcceptorState.ArmedMultishot, a.State);
            r.Accepting.Pause(a, reason: null);
            if (stopInTheSameTurn)
            {
                r.Accepting.Stop(a);
            }
            return a;
        });
        return (listener, acceptor);
    }

    private static async Task AssertUnbindEndsAsync(RingThread ring, IoUringConnectionListener listener, Acceptor acceptor)
    {
        await listener.DisposeAsync().AsTask().WaitAsync(Bound); // unbinding waits for the acceptor to end
        Assert.True(acceptor.Finished.Task.IsCompletedSuccessfully);
        Assert.False(await RingAccess.RunOnRingAsync(ring, r => r.Accepting.AnyInKernel()), "something of the acceptor is still in the kernel");
    }
}
