using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Transport;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// A socket's SHUTDOWN → CLOSE chain reaches the kernel whole: when the SQ has no room for all of it, even after a
/// submit (as SQPOLL can leave it), the chain waits for the next loop turn instead of going out in two submits,
/// where the SHUTDOWN would run unlinked and race the CLOSE.
/// </summary>
[Collection(Protocols.HeavyProtocolCollection.Name)]
public sealed class LinkedCloseChainTests
{
    [Fact]
    public async Task CloseChainWaitsForRoomInsteadOfBeingSplit()
    {
        await using var server = await IoUringTestServer.StartAsync(configureTransport: o => { o.RingCount = 1; o.SubmissionQueueSize = 16; });
        var ring = server.Factory.Rings[0];

        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        int fd;
        using (var accepted = await listener.AcceptAsync())
        {
            fd = RawDescriptors.Dup((int)accepted.Handle); // the ring closes this copy; the socket lives while a descriptor does
        }

        var (splitsBefore, splitsAfter, deferred) = await RingAccess.RunOnRingAsync(ring, r =>
        {
            long before = r.Ring.SplitChainSubmits;
            FillSubmissionQueue(r.Ring, leave: 1);
            RingAccess.FailNextEnters(r, Errno.EAGAIN); // the submit that would make room takes nothing
            r.CloseSocket(fd, fixedSlot: -1, sendFin: true); // SHUTDOWN → CLOSE: two SQEs, one slot free
            r.Ring.Faults = null;
            return (before, r.Ring.SplitChainSubmits, r.PendingCloseChainsDeferred);
        });
        Assert.Equal(1, deferred);

        // The chain went out on a later turn, whole: the client sees the FIN, and no submit split a chain.
        client.ReceiveTimeout = 20_000;
        Assert.Equal(0, client.Receive(new byte[16]));
        long splitsLater = await RingAccess.RunOnRingAsync(ring, r => r.Ring.SplitChainSubmits);
        Assert.Equal(splitsBefore, splitsAfter);
        Assert.Equal(splitsBefore, splitsLater);

        using var http = server.CreateClient();
        Assert.Equal("hello", await http.GetStringAsync("/"));
    }

    /// <summary>
    /// A chain still waiting for room when its ring fails never reaches the kernel: the failing ring closes the
    /// descriptor itself (the peer sees its FIN) and gives its place in the budget back.
    /// </summary>
    [Fact]
    public async Task FailingRingClosesTheChainsStillWaitingForRoom()
    {
        int socketsBefore = FdCounter.CountSockets();
        await using (var standalone = await StandaloneRing.StartAsync(o => o.SubmissionQueueSize = 16))
        {
            var ring = standalone.Ring;
            var (peer, fd) = RawDescriptors.AcceptedSocketCopy();
            using var _ = peer;
            standalone.Descriptors.OnOpened(); // as the accepting ring counts a connection's descriptor

            int deferred = await RingAccess.RunOnRingAsync(ring, r =>
            {
                FillSubmissionQueue(r.Ring, leave: 1);
                RingAccess.FailNextEnters(r, Errno.EAGAIN); // the submit that would make room takes nothing
                r.CloseSocket(fd, fixedSlot: -1, sendFin: true); // SHUTDOWN → CLOSE: two SQEs, one slot free
                // The next turn's submit for room and its enter fail too: the ring fails with the chain still waiting.
                RingAccess.FailNextEnters(r, Errno.EINVAL, count: 2);
                return r.PendingCloseChainsDeferred;
            });
            Assert.Equal(1, deferred);
            await ring.StopAsync().WaitAsync(TimeSpan.FromSeconds(30)); // the failed ring's thread has ended
            Assert.Equal(RingState.Failed, ring.State);

            peer.ReceiveTimeout = 10_000;
            Assert.Equal(0, peer.Receive(new byte[16]));
            Assert.Equal(0, standalone.Descriptors.Open);
        }
        int sockets = await FdCounter.WaitForSocketsAtMostAsync(socketsBefore, TimeSpan.FromSeconds(10));
        Assert.True(sockets <= socketsBefore, $"{sockets} sockets open, {socketsBefore} before");
    }

    private static unsafe void FillSubmissionQueue(Ring ring, uint leave)
    {
        while (ring.SubmissionSpaceLeft > leave)
        {
            Assert.True(ring.TryGetSqe(out IoUringSqe* sqe));
            SqePreparation.PrepareNop(sqe, UserData.Encode(OperationKind.Nop, 0, 0));
        }
    }
}
