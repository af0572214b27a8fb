using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// Work handed to a ring after its loop's last turn never runs there, and is not dropped either: an accepted
/// descriptor handed over by the accepting ring is refused (RST) and its place in the budget given back, and a
/// listener's request to accept there fails at once rather than waiting for ever. Whether it arrives just after the
/// last turn (the ring abandons it on its way out) or once the ring has stopped (the poster abandons it).
/// </summary>
[Collection(HeavyProtocolCollection.Name)] // serial: counts the process's sockets
public sealed class LateRingWorkTests
{
    [Fact]
    public async Task WorkHandedOverAfterTheLastTurnIsAbandoned()
    {
        int socketsBefore = FdCounter.CountSockets();
        await using (var standalone = await StandaloneRing.StartAsync())
        {
            var ring = standalone.Ring;
            var listener = new IoUringConnectionListener(standalone.Context, [ring], new IPEndPoint(IPAddress.Loopback, 0));
            var (afterLastTurnPeer, afterLastTurnFd) = RawDescriptors.AcceptedSocketCopy();
            using var _ = afterLastTurnPeer;
            Task? afterLastTurnAcceptor = null;
            ring.AfterLastTurn = () =>
            {
                // From other threads, as the accepting ring and a binding listener would: the loop will not turn again.
                var poster = new Thread(() =>
                {
                    HandOff(standalone, listener, afterLastTurnFd);
                    afterLastTurnAcceptor = ring.AddAcceptorAsync(listener);
                });
                poster.Start();
                poster.Join();
            };
            await ring.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(RingState.Stopped, ring.State);

            var (afterStopPeer, afterStopFd) = RawDescriptors.AcceptedSocketCopy();
            using var __ = afterStopPeer;
            HandOff(standalone, listener, afterStopFd);
            Task afterStopAcceptor = ring.AddAcceptorAsync(listener);

            foreach (var acceptor in new[] { afterLastTurnAcceptor!, afterStopAcceptor })
            {
                await Assert.ThrowsAsync<RingFailedException>(() => acceptor.WaitAsync(TimeSpan.FromSeconds(10)));
            }
            foreach (var peer in new[] { afterLastTurnPeer, afterStopPeer })
            {
                peer.ReceiveTimeout = 10_000;
                var e = Assert.Throws<SocketException>(() => peer.Receive(new byte[1]));
                Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode); // refused as a closed listener would
            }
            Assert.Equal(0, standalone.Descriptors.Open);
        }
        int sockets = await FdCounter.WaitForSocketsAtMostAsync(socketsBefore, TimeSpan.FromSeconds(10));
        Assert.True(sockets <= socketsBefore, $"{sockets} sockets open, {socketsBefore} before");
    }

    /// <summary>What the accepting ring does with a connection for another ring: count it, hand it over.</summary>
    private static void HandOff(StandaloneRing standalone, IoUringConnectionListener listener, int fd)
    {
        standalone.Descriptors.OnOpened();
        standalone.Ring.TakeHandOff(listener, fd);
    }
}
