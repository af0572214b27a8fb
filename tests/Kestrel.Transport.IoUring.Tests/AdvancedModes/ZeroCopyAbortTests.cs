using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingAccess;

namespace Kestrel.Transport.IoUring.Tests.AdvancedModes;

/// <summary>
/// A zero-copy send to a client that stopped reading keeps its pages in the kernel until the client acknowledges
/// them, which it never does. Aborting such a connection must still end it at once (the client sees the reset) and
/// not hold up the connection count or the server's stop: with the registered send arena and without it.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ZeroCopyAbortTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AbortWithAZeroCopySendStuckOnAClientThatDoesNotReadEndsTheConnectionPromptly(bool registeredSendBuffers)
    {
        var handler = new TaskCompletionSource<HttpContext>(TaskCreationOptions.RunContinuationsAsynchronously);
        var server = await StartServerAsync(handler, registeredSendBuffers);
        bool passed = false;
        try
        {
            using var metrics = new TransportMetricsCollector(server.Services);
            var ring = server.Factory.Rings[0];
            Assert.True(ring.ZeroCopyEnabled, "zero-copy sends are off on this kernel");
            Assert.Equal(registeredSendBuffers, ring.SendArena is not null);

            await using var stalled = await RawHttpConnection.ConnectAsync(server.Port, receiveBufferSize: 4096);
            await stalled.SendAsync("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
            var context = await handler.Task.WaitAsync(TimeSpan.FromSeconds(15));
            var connection = (IoUringConnection)context.Features.Get<IIoUringConnectionFeature>()!;

            bool arenaSendStuck = await WaitUntilAZeroCopySendIsStuckAsync(ring, connection);
            Assert.Equal(registeredSendBuffers, arenaSendStuck);

            context.Abort();

            // The connection closes while the client still reads nothing (reading would let the kernel send the
            // stuck bytes, and the notification come, after all); then the client finds the reset behind the bytes
            // its buffer holds.
            await RingFailureTests.SemanticsPoll(() => metrics.Observe("iouring.connection.active") == 0, "the connection's close");
            var buffer = new byte[64 * 1024];
            var e = await Assert.ThrowsAnyAsync<SocketException>(async () =>
            {
                while (await stalled.Socket.ReceiveAsync(buffer, SocketFlags.None).WaitAsync(TimeSpan.FromSeconds(10)) > 0)
                {
                }
            });
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
            if (registeredSendBuffers)
            {
                await PollOnRingAsync(ring, () => ring.SendArena!.FreeChunks == ring.SendArena.ChunkCount, () => "the arena's chunks back");
            }

            await StuckServerStop.AssertStopsPromptlyAsync(server);
            passed = true;
        }
        finally
        {
            await StuckServerStop.DisposeAsync(server, passed);
        }
    }

    /// <summary>A server whose /big writes 64 KiB chunks until aborted; <paramref name="handler"/> gets its request.</summary>
    private static Task<IoUringTestServer> StartServerAsync(TaskCompletionSource<HttpContext> handler, bool registeredSendBuffers)
        => IoUringTestServer.StartAsync(app =>
        {
            app.MapGet("/big", async (HttpContext c) =>
            {
                handler.TrySetResult(c);
                var chunk = new byte[64 * 1024];
                try
                {
                    while (!c.RequestAborted.IsCancellationRequested)
                    {
                        await c.Response.Body.WriteAsync(chunk, c.RequestAborted);
                    }
                }
                catch (OperationCanceledException)
                {
                }
            });
        }, configureTransport: o =>
        {
            o.RingCount = 1;
            // Every send zero-copy: the send that gets stuck is one, whatever is left of a chunk after partial sends.
            o.ZeroCopySendThreshold = 1;
            o.ZeroCopyToLocalPeers = true; // pipe memory too, though the client is on this host
            o.RegisteredSendBufferSize = registeredSendBuffers ? 8 * 1024 * 1024 : 0; // more than net.ipv4.tcp_wmem's 4 MiB
        });

    /// <summary>
    /// The client reads nothing: the response fills its window and the socket's send queue, and a zero-copy send
    /// stays in the kernel: an arena send waiting for room (the arena is larger than the largest send queue), or pipe
    /// memory waiting for room or for its notification. Two looks 100 ms apart see the same send (not one still
    /// making progress): the kernel has stopped taking bytes. Returns whether it is an arena send.
    /// </summary>
    private static async Task<bool> WaitUntilAZeroCopySendIsStuckAsync(RingThread ring, IoUringConnection connection)
    {
        (ulong ArenaSend, bool Pages) stuck = default;
        await PollOnRingAsync(ring, () =>
        {
            var now = (connection.Sender.ArenaSendUserData, connection.Sender.KernelHoldsZeroCopyPages);
            bool same = now == stuck && (now.ArenaSendUserData != 0 || now.KernelHoldsZeroCopyPages);
            stuck = now;
            return same;
        }, () => $"a zero-copy send held by the kernel (zero-copy sends {ring.ZeroCopySends}, copied {ring.ZeroCopyCopies}, on: {ring.ZeroCopyEnabled}, state {connection.Sender.State})", pollMilliseconds: 100);
        return stuck.ArenaSend != 0;
    }

    /// <summary>Waits (polling, bounded) for ring-thread state that no event announces.</summary>
    private static async Task PollOnRingAsync(RingThread ring, Func<bool> condition, Func<string> what, int pollMilliseconds = 20)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (!await RunOnRingAsync(ring, _ => condition()))
        {
            Assert.True(DateTime.UtcNow < deadline, $"{what()} never came");
            await Task.Delay(pollMilliseconds);
        }
    }
}
