using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Kestrel.Transport.IoUring.Tests.Observability;

/// <summary>The health endpoint tells an operator which transport serves, and why not io_uring.</summary>
public sealed class HealthCheckTests
{
    private static Task<IoUringTestServer> StartAsync(Action<IoUringTransportOptions> configure, bool requireIoUring)
        => IoUringTestServer.StartAsync(
            app => app.MapHealthChecks("/healthz"),
            configureTransport: configure,
            configureServices: services => services.AddHealthChecks().AddIoUringHealthCheck(),
            requireIoUring: requireIoUring);

    [Fact]
    public async Task HealthyWhileIoUringServes()
    {
        await using var server = await StartAsync(_ => { }, requireIoUring: true);
        using var client = server.CreateClient();
        var response = await client.GetAsync("/healthz");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("Healthy", await response.Content.ReadAsStringAsync());

        var report = await server.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        var entry = report.Entries["io_uring"];
        Assert.Equal(HealthStatus.Healthy, entry.Status);
        Assert.Equal("io_uring", entry.Data["transport"]);
        Assert.Equal(2, entry.Data["rings"]);
    }

    [Fact]
    public async Task DegradedWithTheReasonAfterAFallBackToSockets()
    {
        await using var server = await StartAsync(o => o.SimulatedSetupErrno = 1, requireIoUring: false);
        using var client = server.CreateClient();
        var response = await client.GetAsync("/healthz");
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode); // Degraded still serves: 200, as ASP.NET Core maps it
        Assert.Equal("Degraded", await response.Content.ReadAsStringAsync());

        var report = await server.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        var entry = report.Entries["io_uring"];
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Contains("Sockets", entry.Description);
        Assert.Contains("EPERM", entry.Description);
        Assert.Equal("sockets", entry.Data["transport"]);
    }

    [Fact]
    public async Task DegradedWhenARingFailedAndUnhealthyWhenNoneIsLeft()
    {
        await using var server = await StartAsync(o => o.RingCount = 2, requireIoUring: true);
        var health = server.Services.GetRequiredService<HealthCheckService>();

        await RingAccess.InjectAsync(server.Factory.Rings[0], RingFault.EnterError);
        await WaitForRingStateAsync(server, 0);
        var entry = (await health.CheckHealthAsync()).Entries["io_uring"];
        Assert.Equal(HealthStatus.Degraded, entry.Status);
        Assert.Contains("1 of 2", entry.Description);
        Assert.Equal(1, entry.Data["failedRings"]);

        using var client = server.CreateClient();
        Assert.Equal("Degraded", await client.GetStringAsync("/healthz")); // served by the ring that is left

        await RingAccess.InjectAsync(server.Factory.Rings[1], RingFault.EnterError);
        await WaitForRingStateAsync(server, 1);
        entry = (await health.CheckHealthAsync()).Entries["io_uring"];
        Assert.Equal(HealthStatus.Unhealthy, entry.Status);
        Assert.Contains("2 of 2", entry.Description);
    }

    private static Task WaitForRingStateAsync(IoUringTestServer server, int ring)
        => Semantics.TransportUnderTest.PollAsync(
            () => server.Factory.Rings[ring].State == Kestrel.Transport.IoUring.Transport.RingState.Failed ? server : null,
            $"ring {ring} failing");
}
