using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Chaos;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using static Kestrel.Transport.IoUring.Tests.Infrastructure.RingAccess;

namespace Kestrel.Transport.IoUring.Tests.AdvancedModes;

/// <summary>
/// Slow readers (a 4 KiB receive buffer, a pause after the first read, as the chaos run's) downloading from a ring with
/// zero-copy sends on, over loopback. Pipe memory sent zero-copy reaches a peer on this host as skbs charged about twice
/// their length, which made such a reader clamp its window below the server's MSS and the download stop for good
/// (6 of 12 readers stuck at the same byte, 2.7 MB unsent, snd_wnd 1856 &lt; mss 2048); so pipe memory never goes
/// zero-copy to a peer on this host.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ZeroCopySlowReaderTests
{
    [Fact]
    public async Task SlowReadersOnThisHostGetWholeResponsesWithZeroCopyOn()
    {
        var connections = new ConcurrentQueue<IoUringConnection>();
        await using var server = await IoUringTestServer.StartAsync(
            configureKestrel: o => o.Listen(IPAddress.Loopback, 0, l => l.Run(c => ServeAsync(c, connections))),
            configureTransport: o =>
            {
                o.RingCount = 1;
                o.ZeroCopySendThreshold = 16 * 1024;
            });
        var ring = server.Factory.Rings[0];
        Assert.True(ring.ZeroCopyEnabled, "zero-copy sends are off on this kernel");

        var clients = Enumerable.Range(0, 12)
            .Select(i => BlockingClient.Run(() => ReadSlowly(server.Port, size: (1 + i % 4) << 20, pauseMilliseconds: 25 * i, seed: (ulong)i)))
            .ToArray();
        var all = Task.WhenAll(clients);
        if (await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(30))) != all)
        {
            string senders = await RunOnRingAsync(ring, _ => string.Join(", ", connections.Select(c => c.Sender.State)));
            Assert.Fail($"{clients.Count(c => !c.IsCompleted)} of {clients.Length} slow readers still waiting after 30 s; senders: {senders}");
        }
        await all;
        Assert.Equal(0, ring.ZeroCopySends); // the ring stays on for other peers, but sent none of this host's zero-copy
        Assert.True(ring.ZeroCopyEnabled);
    }

    private static async Task ServeAsync(ConnectionContext connection, ConcurrentQueue<IoUringConnection> connections)
    {
        connections.Enqueue((IoUringConnection)connection.Features.Get<IIoUringConnectionFeature>()!);
        string? request = await SendPathServer.ReadLineAsync(connection);
        string[] parts = request!.Split(' ');
        long size = long.Parse(parts[0]);
        ulong seed = ulong.Parse(parts[1]);
        var output = connection.Transport.Output;
        for (long offset = 0; offset < size;)
        {
            int n = (int)Math.Min(64 * 1024, size - offset);
            PatternData.Fill(output.GetSpan(n)[..n], offset, seed);
            output.Advance(n);
            var flush = await output.FlushAsync();
            if (flush.IsCompleted || flush.IsCanceled)
            {
                return;
            }
            offset += n;
        }
    }

    /// <summary>Asks for <paramref name="size"/> bytes, reads one piece, stops reading (its window closes), then reads the rest.</summary>
    private static long ReadSlowly(int port, long size, int pauseMilliseconds, ulong seed)
    {
        using var socket = SendPathServer.ConnectSlowReader(port, receiveBufferSize: 4096);
        socket.Send(Encoding.ASCII.GetBytes($"{size} {seed}\n"));
        var verifier = new PatternVerifier(seed, size, $"slow reader {seed}");
        var buffer = new byte[16 * 1024];
        bool paused = false;
        while (verifier.Received < size)
        {
            int n = socket.Receive(buffer);
            if (n == 0)
            {
                break;
            }
            verifier.Append(buffer.AsSpan(0, n));
            if (!paused)
            {
                paused = true;
                Thread.Sleep(pauseMilliseconds); // the zero window is the point, not synchronisation
            }
        }
        verifier.EnsureComplete();
        return verifier.Received;
    }
}
