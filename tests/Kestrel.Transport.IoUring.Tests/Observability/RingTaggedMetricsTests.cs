using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Kestrel.Transport.IoUring.Tests.Observability;

/// <summary>The meter's instruments: OpenTelemetry-style names and units, per-ring figures tagged with the ring id.</summary>
public sealed class RingTaggedMetricsTests
{
    private const string RingTag = "iouring.ring.id";

    /// <summary>Every instrument of one server's meter, and every measurement with its tags.</summary>
    private sealed class Recorder : IDisposable
    {
        private readonly MeterListener _listener = new();
        public ConcurrentDictionary<string, Instrument> Instruments { get; } = new();
        public ConcurrentQueue<(string Name, long Value, Dictionary<string, object?> Tags)> Measurements { get; } = new();

        public Recorder(IServiceProvider services)
        {
            object scope = services.GetRequiredService<IMeterFactory>();
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == "Kestrel.Transport.IoUring" && ReferenceEquals(instrument.Meter.Scope, scope))
                {
                    Instruments[instrument.Name] = instrument;
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            {
                var copy = new Dictionary<string, object?>();
                foreach (var tag in tags) copy[tag.Key] = tag.Value;
                Measurements.Enqueue((instrument.Name, value, copy));
            });
            _listener.Start();
        }

        public void Observe() => _listener.RecordObservableInstruments();

        public List<(string Name, long Value, Dictionary<string, object?> Tags)> Of(string name) => Measurements.Where(m => m.Name == name).ToList();

        public void Dispose() => _listener.Dispose();
    }

    [Fact]
    public async Task PerRingFiguresCarryTheRingIdAndEveryInstrumentHasAUnit()
    {
        await using var server = await IoUringTestServer.StartAsync(app => app.MapGet("/", (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            return c.Response.WriteAsync("hello");
        }), configureTransport: o => o.RingCount = 2);
        using var recorder = new Recorder(server.Services);

        // Four connections, spread round-robin over the two rings, held open.
        var sockets = Enumerable.Range(0, 4).Select(_ => RawSocket.Connect(server.Port)).ToList();
        try
        {
            foreach (var s in sockets)
            {
                s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
                Assert.Equal("hello", RawSocket.ReadResponse(s).Body);
            }

            recorder.Observe();
            var active = recorder.Of("iouring.connection.active");
            Assert.Equal(new object?[] { 0, 1 }, active.Select(m => m.Tags[RingTag]).OrderBy(id => (int)id!).ToArray());
            Assert.Equal(4, active.Sum(m => m.Value));
            Assert.All(active, m => Assert.Equal(2, m.Value));
        }
        finally
        {
            sockets.ForEach(s => s.Dispose());
        }

        var enterRings = recorder.Of("iouring.enter.calls").Select(m => m.Tags[RingTag]).Distinct().OrderBy(id => (int)id!).ToArray();
        Assert.Equal(new object?[] { 0, 1 }, enterRings);
        Assert.All(recorder.Of("iouring.sqe.submitted"), m => Assert.True(m.Tags.ContainsKey(RingTag)));
        var received = recorder.Of("iouring.network.io").Where(m => (string?)m.Tags["network.io.direction"] == "receive").Sum(m => m.Value);
        var sent = recorder.Of("iouring.network.io").Where(m => (string?)m.Tags["network.io.direction"] == "transmit").Sum(m => m.Value);
        Assert.True(received >= 4 * "GET / HTTP/1.1\r\nHost: x\r\n\r\n".Length, $"received {received}");
        Assert.True(sent > 4 * "hello".Length, $"sent {sent}");

        // Names as documented in the README, each with a unit (UCUM: "By", or an annotation such as "{connection}").
        string[] documented =
        [
            "iouring.connection.active", "iouring.connection.accepted", "iouring.network.io", "iouring.sends.direct",
            "iouring.sends.ring", "iouring.enter.calls",
            "iouring.enter.submitted", "iouring.sqe.submitted", "iouring.cq.overflows", "iouring.recv.no_buffers",
            "iouring.send_zc.sends", "iouring.send_zc.copied", "iouring.accept.pauses", "iouring.fixed_files.exhausted",
            "iouring.ring.wakeups", "iouring.ring.yields", "iouring.fallbacks", "iouring.ring.failures", "iouring.dispatch.waiting",
        ];
        Assert.Equal(documented.Order(), recorder.Instruments.Keys.Order());
        Assert.All(recorder.Instruments.Values, i => Assert.False(string.IsNullOrEmpty(i.Unit), i.Name));
        Assert.All(recorder.Instruments.Values, i => Assert.DoesNotContain("total", i.Name));
    }
}
