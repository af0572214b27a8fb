using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Kestrel.Transport.IoUring.Transport;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingAccess;

namespace Kestrel.Transport.IoUring.Tests.Hardening;

/// <summary>
/// A ring that fails while a flushing thread is inside a direct sendmsg(2) must leave that send's memory (the msghdr,
/// the pinned pipe segments) and the descriptor alone: the sender, returning last, releases them, once.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class DirectSendRingFailureTests
{
    [Fact]
    public async Task ADirectSendStillInItsSyscallWhenTheRingFailsReleasesItsMemoryAndDescriptorWhenItReturns()
    {
        var payload = new byte[3 * 4096 + 100]; // several pool blocks: a vectored send through the msghdr
        PatternData.Fill(payload, 0);
        var inside = new TaskCompletionSource<IoUringConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var release = new ManualResetEventSlim();
        var server = await SendPathServer.StartAsync(SendPathMode.Direct, async connection =>
        {
            await SendPathServer.ReadLineAsync(connection);
            await connection.Transport.Output.WriteAsync(payload);
            await SendPathServer.ReadLineAsync(connection); // until the connection ends
        }, o => o.RingCount = 1);
        SenderTestHooks.InsideDirectSend = connection =>
        {
            if (((IPEndPoint)connection.LocalEndPoint!).Port == server.Port && connection.Sender.PinnedSegments > 1 && inside.TrySetResult(connection))
            {
                release.Wait(TimeSpan.FromSeconds(30)); // the send stays "in its syscall" while the ring fails
            }
        };
        bool passed = false;
        try
        {
            using var socket = RawSocket.Connect(server.Port);
            socket.Send("go\n"u8);
            var connection = await inside.Task.WaitAsync(TimeSpan.FromSeconds(15));
            var sender = connection.Sender;
            string descriptor = $"/proc/self/fd/{connection.Descriptor}";
            string socketInode = new FileInfo(descriptor).LinkTarget!;
            int pinned = sender.PinnedSegments;

            var ring = server.Factory.Rings[0];
            await InjectAsync(ring, RingFault.EnterError);
            await RingFailureTests.SemanticsPoll(() => server.Logs.Records.Any(r => r.EventId.Name == "RingFailed"), "the ring's failure handling");

            // The ring is done with its connections; the send is still inside: its memory and descriptor must be intact.
            Assert.True(sender.MessageAllocated, "the msghdr was freed under a send still using it");
            Assert.Equal(pinned, sender.PinnedSegments);
            Assert.Equal(SenderState.DirectSendOutlivedRing, sender.State);
            Assert.Equal(socketInode, new FileInfo(descriptor).LinkTarget);

            release.Set();

            // The send goes through with the memory intact, then the sender closes the descriptor (linger 0: RST).
            Assert.Equal(payload, ReadUntilReset(socket));
            Assert.Equal(SenderState.Done, sender.State);
            Assert.False(sender.MessageAllocated);
            Assert.Equal(0, sender.PinnedSegments);
            Assert.NotEqual(socketInode, Readlink(descriptor));
            passed = true;
        }
        finally
        {
            SenderTestHooks.InsideDirectSend = null;
            release.Set();
            await StuckServerStop.DisposeAsync(server, passed);
        }
    }

    /// <summary>Reads until the peer's RST (anything else fails) and returns what came before it.</summary>
    private static byte[] ReadUntilReset(Socket socket)
    {
        var received = new MemoryStream();
        var e = Assert.Throws<SocketException>(() =>
        {
            var buffer = new byte[64 * 1024];
            int n;
            while ((n = socket.Receive(buffer)) > 0)
            {
                received.Write(buffer, 0, n);
            }
        });
        Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
        return received.ToArray();
    }

    private static string? Readlink(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }
}
