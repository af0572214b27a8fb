using System.IO.Pipelines;
using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Core;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// The send path: the flushing thread sends directly while the socket takes the bytes, the ring takes over when it
/// does not, and order, FIN, RST and error mapping are those of the ring-only path (<see cref="SendPathMode.Ring"/>,
/// run as the reference).
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class DirectSendTests
{
    private const string Category = TransportUnderTest.IoUringCategory;

    [Theory]
    [InlineData(SendPathMode.Direct)]
    [InlineData(SendPathMode.Ring)]
    public async Task ConcurrentConnectionsFlushingFromManyThreadsKeepEveryByteInOrder(SendPathMode mode)
    {
        const int Connections = 6;
        const long Length = 12L * 1024 * 1024 + 777;
        await using var server = await SendPathServer.StartAsync(mode, async connection =>
        {
            ulong seed = ulong.Parse(await ReadSeedAsync(connection));
            await SendPathServer.WritePatternAsync(connection, Length, seed);
        });
        using var metrics = new TransportMetricsCollector(server.Services);

        // Each client alternates reading fast and pausing: while it reads, flushes go out directly; while it pauses,
        // the socket buffer fills, a send is partial or EAGAIN and the ring takes over, with later flushes queued
        // behind the ring's send. Every byte must still arrive once and in order.
        var clients = Enumerable.Range(1, Connections).Select(i => BlockingClient.Run(() =>
        {
            using var socket = SendPathServer.ConnectSlowReader(server.Port, 64 * 1024);
            socket.Send(Encoding.ASCII.GetBytes($"{i}\n"));
            var (length, hash) = SendPathServer.ReadAndHash(socket, 16 * 1024, pauseEvery: 1024 * 1024, pauseMilliseconds: 15);
            return (Seed: (ulong)i, length, hash);
        })).ToArray();

        foreach (var (seed, length, hash) in await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(120)))
        {
            Assert.Equal(Length, length);
            Assert.Equal(PatternData.Sha256(Length, seed), hash);
        }
        AssertPathsUsed(metrics, mode, expectRingHandOver: true);
    }

    [Fact]
    public async Task A256MegabyteTransferToASlowReaderSurvivesPartialSendsAndEagain()
    {
        const long Length = 256L * 1024 * 1024 + 4321;
        const ulong Seed = 77;
        await using var server = await SendPathServer.StartAsync(SendPathMode.Direct,
            connection => SendPathServer.WritePatternAsync(connection, Length, Seed, maxWrite: 256 * 1024));
        using var metrics = new TransportMetricsCollector(server.Services);
        Task<string> expected = Task.Run(() => PatternData.Sha256(Length, Seed));

        var (length, hash) = await BlockingClient.Run(() =>
        {
            using var socket = SendPathServer.ConnectSlowReader(server.Port, 16 * 1024);
            return SendPathServer.ReadAndHash(socket, 4096, pauseEvery: 16L * 1024 * 1024, pauseMilliseconds: 20);
        }).WaitAsync(TimeSpan.FromSeconds(180));

        Assert.Equal(Length, length);
        Assert.Equal(await expected, hash);
        AssertPathsUsed(metrics, SendPathMode.Direct, expectRingHandOver: true);
    }

    [Theory]
    [InlineData(SendPathMode.Direct)]
    [InlineData(SendPathMode.Ring)]
    public async Task CompletingTheOutputAfterManyFlushesSendsEverythingThenFin(SendPathMode mode)
    {
        var expected = new MemoryStream();
        for (int i = 0; i < 200; i++)
        {
            expected.Write(Encoding.ASCII.GetBytes($"line {i} {new string('x', i * 13 % 300)}\n"));
        }
        byte[] payload = expected.ToArray();
        await using var server = await SendPathServer.StartAsync(mode, async connection =>
        {
            var output = connection.Transport.Output;
            foreach (var line in Encoding.ASCII.GetString(payload).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                await output.WriteAsync(Encoding.ASCII.GetBytes(line + "\n"));
            }
            // Returning completes the output: FIN once every flushed byte has gone.
        });
        using var metrics = new TransportMetricsCollector(server.Services);

        byte[] received = await BlockingClient.Run(() =>
        {
            using var socket = RawSocket.Connect(server.Port);
            return RawSocket.ReadToEnd(socket); // a reset or a missing FIN throws
        });

        Assert.Equal(payload, received);
        var fin = await TransportUnderTest.WaitForLogAsync(server, Category, "ConnectionWriteFin");
        Assert.Equal(LogLevel.Debug, fin.Level);
        AssertPathsUsed(metrics, mode, expectRingHandOver: false);
        TransportUnderTest.AssertNothingAboveDebug(server, Category);
    }

    [Fact]
    public async Task FlushesWrittenInOneGoLeaveInFewSendsNotOneEach()
    {
        // Kestrel flushes once per response: per pipelined request, per HTTP/2 stream, per TLS record. Responses
        // written in one go must leave together (the send runs after the flushing work item, as with Sockets), not
        // as one send(2) per flush.
        const int Flushes = 64, Size = 100, Bursts = 5;
        await using var server = await SendPathServer.StartAsync(SendPathMode.Direct, async connection =>
        {
            var input = connection.Transport.Input;
            var output = connection.Transport.Output;
            var chunk = new byte[Size];
            while (true)
            {
                var read = await input.ReadAsync();
                input.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted) return;
                for (int i = 0; i < Flushes; i++)
                {
                    await output.WriteAsync(chunk); // completes synchronously: far below the pause threshold
                }
            }
        });
        using var metrics = new TransportMetricsCollector(server.Services);

        await BlockingClient.Run(() =>
        {
            using var socket = RawSocket.Connect(server.Port);
            var buffer = new byte[Flushes * Size];
            for (int burst = 0; burst < Bursts; burst++)
            {
                socket.Send("go"u8);
                int got = 0;
                while (got < buffer.Length)
                {
                    int n = socket.Receive(buffer, got, buffer.Length - got, SocketFlags.None);
                    Assert.True(n > 0, "the server closed early");
                    got += n;
                }
            }
            return 0;
        }).WaitAsync(TimeSpan.FromSeconds(30));

        long sends = metrics.Total("iouring.sends.direct") + metrics.Total("iouring.sends.ring");
        Assert.True(sends <= Bursts * Flushes / 4, $"{sends} sends for {Bursts * Flushes} flushes in {Bursts} bursts");
    }

    [Fact]
    public async Task AConnectionThatOnceFlushedTwiceInOneWorkItemSendsItsLaterSingleFlushesAtOnceAgain()
    {
        // A TLS connection's first request can share its work item with the end of the handshake (the session
        // tickets are a flush of their own): two flushes in one work item. That must not make every later single
        // response wait for the end of its work item, where a handler that flushes and then blocks would hold it.
        int retryAfter = FlushingThreadScheduler.DeferredSendsBeforeRetry;
        int requests = retryAfter + 20;
        var sentBeforeFlushReturned = new bool[requests];
        var readWaiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var allNoted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        TransportMetricsCollector? metrics = null;
        await using var server = await SendPathServer.StartAsync(SendPathMode.Direct, async connection =>
        {
            var output = connection.Transport.Output;
            // The two flushes must run in a work item of the ring's dispatch, where a work item's end is known
            // exactly: a read that waits for the client resumes there. (The first read can complete on Kestrel's own
            // work item, and a read of bytes already there continues the work item that read before.)
            if (await SendPathServer.ReadLineAsync(connection) != "hello") return;
            var input = connection.Transport.Input;
            ValueTask<ReadResult> waiting = input.ReadAsync();
            if (waiting.IsCompleted) return; // the client sends after the signal below: the assertions report it
            readWaiting.SetResult();
            ReadResult two = await waiting;
            if (Encoding.ASCII.GetString(two.Buffer) != "two\n") return;
            input.AdvanceTo(two.Buffer.End);
            await output.WriteAsync("one\n"u8.ToArray()); // both flushes complete synchronously, in one work item
            await output.WriteAsync("two\n"u8.ToArray());
            for (int i = 0; i < requests; i++)
            {
                if (await SendPathServer.ReadLineAsync(connection) is null) return;
                long before = metrics!.Total("iouring.sends.direct");
                await output.WriteAsync(Encoding.ASCII.GetBytes($"reply {i}\n"));
                // A send at once has happened inside the flush; a deferred one waits for this work item to end.
                sentBeforeFlushReturned[i] = metrics.Total("iouring.sends.direct") > before;
            }
            allNoted.SetResult();
        });
        metrics = new TransportMetricsCollector(server.Services);
        using var collector = metrics;

        await BlockingClient.Run(() =>
        {
            using var socket = RawSocket.Connect(server.Port);
            socket.Send("hello\n"u8);
            Assert.True(readWaiting.Task.Wait(TimeSpan.FromSeconds(15)), "the server never waited for the next line");
            socket.Send("two\n"u8);
            Assert.Equal("one\ntwo\n", Encoding.ASCII.GetString(Loopback.ReadExactly(socket, "one\ntwo\n".Length)));
            for (int i = 0; i < requests; i++)
            {
                socket.Send("next\n"u8);
                string reply = $"reply {i}\n";
                Assert.Equal(reply, Encoding.ASCII.GetString(Loopback.ReadExactly(socket, reply.Length)));
            }
            return 0;
        }).WaitAsync(TimeSpan.FromSeconds(30));
        await allNoted.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the last reply reaches the client before it is noted

        // While deferring, a flush can also find the previous deferred send still running on another thread, which
        // then takes this flush's bytes too; that postpones the retry by a request, never past the last few.
        string pattern = string.Concat(sentBeforeFlushReturned.Select(atOnce => atOnce ? 'A' : 'd'));
        Assert.True(sentBeforeFlushReturned.Take(retryAfter - 1).Any(atOnce => !atOnce),
            $"the two flushes in one work item did not make the connection defer its sends ({pattern})");
        Assert.True(sentBeforeFlushReturned.TakeLast(5).All(atOnce => atOnce),
            $"single flushes still deferred {requests - 5} requests after the two flushes ({pattern})");
    }

    [Theory]
    [InlineData(SendPathMode.Direct)]
    [InlineData(SendPathMode.Ring)]
    public async Task AbortWhileFlushesAreBeingSentResetsEveryConnectionAndLeaksNothing(SendPathMode mode)
    {
        const int Connections = 24;
        var handlersDone = new TaskCompletionSource[Connections];
        for (int i = 0; i < Connections; i++) handlersDone[i] = new(TaskCreationOptions.RunContinuationsAsynchronously);
        int next = -1;
        await using var server = await SendPathServer.StartAsync(mode, async connection =>
        {
            int index = Interlocked.Increment(ref next);
            try
            {
                // Flush small chunks back to back (each one a send) and abort from another thread meanwhile, after
                // a varying delay, so the abort lands before, during and between sends.
                var writer = Task.Run(async () =>
                {
                    var chunk = new byte[8 * 1024];
                    while (true)
                    {
                        var result = await connection.Transport.Output.WriteAsync(chunk);
                        if (result.IsCompleted || result.IsCanceled) return;
                        // Writes to a fast reader complete synchronously: without yielding, two dozen such loops
                        // would hold every pool thread and Kestrel could not even dispatch the next connection.
                        await Task.Yield();
                    }
                });
                await Task.Delay(index % 6);
                connection.Abort(new ConnectionAbortedException("test abort"));
                await writer.WaitAsync(TimeSpan.FromSeconds(30));
            }
            finally
            {
                handlersDone[index].TrySetResult();
            }
        });
        using var metrics = new TransportMetricsCollector(server.Services);
        int socketsBefore = FdCounter.CountSockets();

        var clients = Enumerable.Range(0, Connections).Select(_ => BlockingClient.Run(() =>
        {
            using var socket = RawSocket.Connect(server.Port);
            var e = Assert.Throws<SocketException>(() => RawSocket.ReadToEnd(socket));
            return e.SocketErrorCode;
        })).ToArray();

        foreach (var error in await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(60)))
        {
            Assert.Equal(SocketError.ConnectionReset, error);
        }
        await Task.WhenAll(handlersDone.Select(t => t.Task)).WaitAsync(TimeSpan.FromSeconds(30));

        // Every connection closed its descriptor, each with the RST an abort sends.
        Assert.Equal(0, await PollActiveConnectionsAsync(metrics));
        Assert.True(await FdCounter.WaitForSocketsAtMostAsync(socketsBefore, TimeSpan.FromSeconds(10)) <= socketsBefore);
        Assert.Equal(Connections, server.Logs.Records.Count(r => r.Category == Category && r.EventId.Name == "ConnectionWriteRst"));
        AssertPathsUsed(metrics, mode, expectRingHandOver: false);
        TransportUnderTest.AssertNothingAboveDebug(server, Category);
    }

    [Theory]
    [InlineData(SendPathMode.Direct)]
    [InlineData(SendPathMode.Ring)]
    public async Task SendingToAPeerThatResetIsAConnectionResetAtDebug(SendPathMode mode)
    {
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = await SendPathServer.StartAsync(mode, async connection =>
        {
            try
            {
                // Wait for the peer's RST on the input, then send: the send fails with ECONNRESET or EPIPE.
                var input = connection.Transport.Input;
                var ex = await Assert.ThrowsAsync<ConnectionResetException>(async () =>
                {
                    while (true)
                    {
                        var read = await input.ReadAsync();
                        input.AdvanceTo(read.Buffer.End);
                        if (read.IsCompleted) return;
                    }
                });
                for (int i = 0; i < 10_000; i++)
                {
                    var result = await connection.Transport.Output.WriteAsync(new byte[1024]);
                    if (result.IsCompleted)
                    {
                        outcome.TrySetResult("output completed");
                        return;
                    }
                }
                outcome.TrySetResult("the output never completed");
            }
            catch (Exception e)
            {
                outcome.TrySetResult(e.GetType().Name);
            }
        });
        using var metrics = new TransportMetricsCollector(server.Services);

        using (var socket = RawSocket.Connect(server.Port))
        {
            socket.Send("x"u8.ToArray());
            RawSocket.Reset(socket);
        }

        Assert.Equal("output completed", await outcome.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        var reset = await TransportUnderTest.WaitForLogAsync(server, Category, "ConnectionReset");
        Assert.Equal(LogLevel.Debug, reset.Level);
        Assert.Equal(0, await PollActiveConnectionsAsync(metrics));
        AssertPathsUsed(metrics, mode, expectRingHandOver: false);
        TransportUnderTest.AssertNothingAboveDebug(server, Category);
    }

    private static async Task<string> ReadSeedAsync(ConnectionContext connection)
        => await SendPathServer.ReadLineAsync(connection) ?? throw new InvalidOperationException("no seed line");

    private static async Task<long> PollActiveConnectionsAsync(TransportMetricsCollector metrics)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        long active;
        while ((active = metrics.Observe("iouring.connection.active")) > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        return active;
    }

    /// <summary>Direct mode sends directly (and, where the socket filled, hands over to the ring); Ring mode never sends directly.</summary>
    private static void AssertPathsUsed(TransportMetricsCollector metrics, SendPathMode mode, bool expectRingHandOver)
    {
        long direct = metrics.Total("iouring.sends.direct"), ring = metrics.Total("iouring.sends.ring");
        if (mode == SendPathMode.Ring)
        {
            Assert.Equal(0, direct);
            Assert.True(ring > 0, "no ring send in Ring mode");
            return;
        }
        Assert.True(direct > 0, $"no direct send in Direct mode (ring sends: {ring})");
        if (expectRingHandOver)
        {
            Assert.True(ring > 0, $"the ring never took over from a direct send (direct sends: {direct})");
        }
    }
}
