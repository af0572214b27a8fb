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
}
