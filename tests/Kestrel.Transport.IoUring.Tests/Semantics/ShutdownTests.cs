using System.Net;
using System.Net.Sockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;

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
            Assert.True(DateTime.UtcNow < deadline, "the listener was never unbound");
            await Task.Delay(20);
        }
    }
}
