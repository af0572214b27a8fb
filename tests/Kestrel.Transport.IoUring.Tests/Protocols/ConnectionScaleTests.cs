using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>Many connections at once, and many in a row: every one served, spread over the rings, nothing leaked.</summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class ConnectionScaleTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task ThousandConcurrentConnections_AllServed_SpreadOverBothRings()
    {
        const int connections = 1000;
        int arrived = 0;
        var allArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var perRing = new ConcurrentDictionary<int, int>();
        var connectionIds = new ConcurrentDictionary<string, byte>();

        await using var server = await IoUringTestServer.StartAsync(
            configureApp: app => app.MapGet("/c/{i:int}", async (int i, HttpContext context) =>
            {
                var feature = context.Features.Get<IIoUringConnectionFeature>();
                if (feature is null)
                {
                    return Results.Problem("no IIoUringConnectionFeature");
                }
                perRing.AddOrUpdate(feature.RingId, 1, (_, n) => n + 1);
                connectionIds.TryAdd(context.Connection.Id, 0);
                // Every request waits until all of them are in: the 1000 connections are really open at once.
                if (Interlocked.Increment(ref arrived) == connections)
                {
                    allArrived.TrySetResult();
                }
                await allArrived.Task.WaitAsync(Timeout);
                return Results.Text($"ok {i} ring {feature.RingId}");
            }),
            configureTransport: o => o.RingCount = 2);
        Assert.Equal(2, server.Factory.RingCount);

        using var cts = new CancellationTokenSource(Timeout);
        var sockets = new RawHttpConnection[connections];
        try
        {
            // Connect with bounded parallelism (the listen backlog is finite), keeping every connection open.
            await Parallel.ForEachAsync(Enumerable.Range(0, connections), new ParallelOptions { MaxDegreeOfParallelism = 64, CancellationToken = cts.Token },
                async (i, ct) => sockets[i] = await RawHttpConnection.ConnectAsync(server.Port, ct));

            var results = await Task.WhenAll(Enumerable.Range(0, connections).Select(async i =>
            {
                await sockets[i].SendAsync($"GET /c/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n", cts.Token);
                return await sockets[i].ReadResponseAsync(cts.Token);
            }));

            for (int i = 0; i < connections; i++)
            {
                Assert.Equal(200, results[i].Status);
                Assert.StartsWith($"ok {i} ring ", results[i].Body);
            }
        }
        finally
        {
            foreach (var socket in sockets)
            {
                if (socket is not null)
                {
                    await socket.DisposeAsync();
                }
            }
        }

        Assert.Equal(connections, connectionIds.Count);
        output.WriteLine("Connections per ring: " + string.Join(", ", perRing.OrderBy(p => p.Key).Select(p => $"ring {p.Key}: {p.Value}")));
        Assert.Equal(connections, perRing.Values.Sum());
        Assert.All(perRing.Keys, ring => Assert.InRange(ring, 0, 1));
        Assert.True(perRing.GetValueOrDefault(0) > 0 && perRing.GetValueOrDefault(1) > 0,
            "all connections landed on one ring: " + string.Join(", ", perRing.Select(p => $"{p.Key}={p.Value}")));
    }

    [Fact]
    public async Task TenThousandConnectionsOpenedAndClosed_NoDescriptorLeak()
    {
        const int connections = 10_000;
        await using var server = await IoUringTestServer.StartAsync(configureApp: app => app.MapGet("/", () => Results.Text("hello")));

        // Watch the transport's own instruments for this host only (its Meter comes from the host's IMeterFactory).
        var meterFactory = server.Services.GetService<IMeterFactory>();
        long accepted = 0, active = -1;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (meterFactory is not null && instrument.Meter.Name == "Kestrel.Transport.IoUring" && ReferenceEquals(instrument.Meter.Scope, meterFactory)
                && instrument.Name is "iouring.connection.accepted" or "iouring.connection.active")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "iouring.connection.accepted")
            {
                Interlocked.Add(ref accepted, value);
            }
            else
            {
                Volatile.Write(ref active, value);
            }
        });
        listener.Start();

        using var cts = new CancellationTokenSource(Timeout);
        async Task OneConnectionAsync(CancellationToken ct)
        {
            await using var connection = await RawHttpConnection.ConnectAsync(server.Port, ct);
            await connection.SendAsync("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", ct);
            var (status, _, body) = await connection.ReadResponseAsync(ct);
            Assert.Equal(200, status);
            Assert.Equal("hello", body);
            Assert.True(await connection.ReadsEndOfStreamAsync(ct), "the server did not close after Connection: close");
        }

        // Warm up (JIT, lazily loaded assemblies, thread pool), then take the baseline.
        await Parallel.ForEachAsync(Enumerable.Range(0, 50), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = cts.Token },
            async (_, ct) => await OneConnectionAsync(ct));
        int baseline = await FdCounter.WaitForAtMostAsync(0, TimeSpan.Zero);
        long acceptedBefore = Interlocked.Read(ref accepted);

        var stopwatch = Stopwatch.StartNew();
        await Parallel.ForEachAsync(Enumerable.Range(0, connections), new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = cts.Token },
            async (_, ct) => await OneConnectionAsync(ct));
        stopwatch.Stop();

        const int slack = 16;
        int after = await FdCounter.WaitForAtMostAsync(baseline + slack, TimeSpan.FromSeconds(30));
        output.WriteLine($"{connections} connections in {stopwatch.Elapsed.TotalSeconds:F1} s; fds: baseline {baseline}, after {after}");
        Assert.True(after <= baseline + slack, $"file descriptors leaked: {after} open after, baseline {baseline}");

        if (meterFactory is null)
        {
            output.WriteLine("No IMeterFactory in the host: the metric checks are skipped.");
            return;
        }
        Assert.Equal(connections, Interlocked.Read(ref accepted) - acceptedBefore);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        do
        {
            listener.RecordObservableInstruments();
            if (Volatile.Read(ref active) == 0)
            {
                break;
            }
            await Task.Delay(50); // polling an observable gauge: there is no event to wait on
        }
        while (DateTime.UtcNow < deadline);
        Assert.Equal(0, Volatile.Read(ref active));
    }
}
