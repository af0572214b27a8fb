using System.Diagnostics.Metrics;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Hardening;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// A send loop that throws, wherever it throws (a metrics listener inside a direct send or a ring send's completion,
/// a logger in the loop's tail), ends its connection: the client sees the close, every socket closes and the server
/// stops promptly. Nothing may leave the loop waiting, or its connection half-closed, for ever.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class SendLoopFaultTests
{
    [Theory]
    [InlineData(SendPathMode.Direct, "iouring.sends.direct")] // inside a direct send, before the syscall
    [InlineData(SendPathMode.Ring, "iouring.network.io")]     // a ring send's completion (bytes sent)
    public async Task AThrowingMetricsListenerEndsTheConnectionAndLeavesNothingOpen(SendPathMode mode, string instrument)
    {
        int thrown = 0;
        await RunAndAssertEndedAsync(mode, services => ThrowingListener(services, instrument, () => Interlocked.Increment(ref thrown)),
            configureServices: null);
        Assert.True(Volatile.Read(ref thrown) > 0, "the listener never threw");
    }

    [Fact]
    public async Task ALoggerThrowingInTheLoopsTailStillEndsTheConnection()
    {
        // The loop's tail logs the FIN (ConnectionWriteFin); a logger that throws there must not strand the connection.
        var provider = new ThrowingLoggerProvider("ConnectionWriteFin");
        await RunAndAssertEndedAsync(SendPathMode.Direct, _ => null, services => services.AddLogging(b => b.AddProvider(provider).AddFilter<ThrowingLoggerProvider>(null, LogLevel.Debug)));
        Assert.True(provider.Thrown > 0, "the logger never threw");
    }

    private static async Task RunAndAssertEndedAsync(SendPathMode mode, Func<IServiceProvider, IDisposable?> fault, Action<IServiceCollection>? configureServices)
    {
        var server = await IoUringTestServer.StartAsync(
            configureKestrel: o => o.Listen(System.Net.IPAddress.Loopback, 0, l => l.Run(async connection =>
            {
                await SendPathServer.ReadLineAsync(connection);
                await connection.Transport.Output.WriteAsync(new byte[20_000]);
                // Returning completes the output: the loop ends gracefully (FIN) unless it failed first.
            })),
            configureTransport: o => { o.SendPath = mode; o.RingCount = 1; },
            configureServices: configureServices);
        bool passed = false;
        try
        {
            int socketsBefore = FdCounter.CountSockets();
            using (fault(server.Services))
            {
                string outcome = await BlockingClient.Run(() =>
                {
                    using var socket = RawSocket.Connect(server.Port);
                    socket.Send("go\n"u8);
                    try
                    {
                        RawSocket.ReadToEnd(socket);
                        return "FIN";
                    }
                    catch (SocketException e)
                    {
                        return e.SocketErrorCode == SocketError.ConnectionReset ? "RST" : e.SocketErrorCode.ToString();
                    }
                }).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.True(outcome is "FIN" or "RST", $"the client saw {outcome}, not the connection's end");
            }

            int sockets = await FdCounter.WaitForSocketsAtMostAsync(socketsBefore, TimeSpan.FromSeconds(10));
            Assert.True(sockets <= socketsBefore, $"{sockets} sockets open, {socketsBefore} before");
            await StuckServerStop.AssertStopsPromptlyAsync(server);
            passed = true;
        }
        finally
        {
            await StuckServerStop.DisposeAsync(server, passed);
        }
    }

    /// <summary>Throws from every measurement of <paramref name="instrumentName"/> of this server's meter (received bytes excepted).</summary>
    private static MeterListener ThrowingListener(IServiceProvider services, string instrumentName, Action onThrow)
    {
        object scope = services.GetRequiredService<IMeterFactory>();
        var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Name == instrumentName && ReferenceEquals(instrument.Meter.Scope, scope))
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "network.io.direction" && (string?)tag.Value == "receive")
                {
                    return; // the receive side is not under test
                }
            }
            onThrow();
            throw new InvalidOperationException("a metrics listener failed");
        });
        listener.Start();
        return listener;
    }

    private sealed class ThrowingLoggerProvider(string eventName) : ILoggerProvider
    {
        private int _thrown;

        public int Thrown => Volatile.Read(ref _thrown);

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void Dispose()
        {
        }

        private sealed class Logger(ThrowingLoggerProvider provider) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (eventId.Name == provider.EventName)
                {
                    Interlocked.Increment(ref provider._thrown);
                    throw new InvalidOperationException("a logger failed");
                }
            }
        }

        private string EventName => eventName;
    }
}
