using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>Graceful shutdown follows Kestrel's order: unbind, let in-flight requests finish, then close.</summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task GracefulShutdownCompletesInFlightRequestsAndRefusesNewConnections()
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var server = await IoUringTestServer.StartAsync(app => app.MapGet("/slow", async () =>
        {
            entered.TrySetResult();
            await release.Task;
            return new string('x', 100_000);
        }));
        int port = server.Port;
        try
        {
            using var client = server.CreateClient();
            var inFlight = client.GetStringAsync("/slow");
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(15));

            Task stopping = server.StopAsync();
            // Unbound: new connections are refused while the in-flight request still runs.
            await WaitUntilRefusedAsync(port);
            Assert.False(stopping.IsCompleted);

            release.SetResult();
            Assert.Equal(100_000, (await inFlight.WaitAsync(TimeSpan.FromSeconds(15))).Length);
            await stopping.WaitAsync(TimeSpan.FromSeconds(15));
        }
        finally
        {
            release.TrySetResult();
            await server.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(TransportUnderTest.IoUringRing)]
    [InlineData(TransportUnderTest.Sockets)]
    public async Task ShutdownClosesIdleKeepAliveConnectionsWithFin(string transport)
    {
        var server = await TransportUnderTest.StartAsync(transport, app => app.MapGet("/", (HttpContext c) =>
        {
            c.Response.ContentLength = 5;
            return c.Response.WriteAsync("hello");
        }));
        try
        {
            using var s = RawSocket.Connect(server.Port);
            s.Send("GET / HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            Assert.Equal("hello", RawSocket.ReadResponse(s).Body);

            await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Empty(RawSocket.ReadToEnd(s)); // FIN (a reset would throw)
            Assert.Equal(7, (await TransportUnderTest.WaitForLogAsync(server, TransportUnderTest.CategoryOf(transport), "ConnectionWriteFin")).EventId.Id);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(TransportUnderTest.IoUringRing)]
    [InlineData(TransportUnderTest.Sockets)]
    public async Task ShutdownAbortsARequestThatOutlivesTheTimeoutWithRst(string transport)
    {
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var aborted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var server = await TransportUnderTest.StartAsync(transport, app => app.MapGet("/stuck", async (HttpContext c) =>
        {
            c.RequestAborted.Register(() => aborted.TrySetResult());
            entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, c.RequestAborted).ContinueWith(_ => { });
        }), configureServices: services => services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromMilliseconds(500)));
        try
        {
            using var s = RawSocket.Connect(server.Port);
            s.Send("GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n"u8);
            await entered.Task.WaitAsync(TimeSpan.FromSeconds(15));

            await server.StopAsync().WaitAsync(TimeSpan.FromSeconds(15));
            await aborted.Task.WaitAsync(TimeSpan.FromSeconds(15));
            var e = Assert.Throws<SocketException>(() => RawSocket.ReadToEnd(s));
            Assert.Equal(SocketError.ConnectionReset, e.SocketErrorCode);
            Assert.Equal(8, (await TransportUnderTest.WaitForLogAsync(server, TransportUnderTest.CategoryOf(transport), "ConnectionWriteRst")).EventId.Id);
        }
        finally
        {
            await server.DisposeAsync();
        }
    }

    private static async Task WaitUntilRefusedAsync(int port)
    {
        // Unbinding happens on the host's stop path; poll, bounded, until the port refuses connections.
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await s.ConnectAsync(IPAddress.Loopback, port);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
                // Caught in the backlog as the listening socket closed (Sockets does the same): not served either.
            }
            Assert.True(DateTime.UtcNow < deadline, "the listener was never unbound");
            await Task.Delay(20);
        }
    }
}
