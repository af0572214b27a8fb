using System.Net;
using Kestrel.Transport.IoUring.Transport;
using Microsoft.AspNetCore;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// io_uring must be the transport that actually serves, whichever order UseIoUring and UseKestrel are called in
/// (Kestrel takes the factory registered last; UseKestrel only TryAdds Sockets): never a silent Sockets.
/// </summary>
public sealed class TransportSelectionTests
{
    private static void MapWhoServes(IApplicationBuilder app) => app.Run(async c =>
    {
        var feature = c.Features.Get<IIoUringConnectionFeature>();
        await c.Response.WriteAsync(feature is null ? "sockets" : $"io_uring ring {feature.RingId}");
    });

    private static async Task<string> GetAsync(string address)
    {
        using var client = new HttpClient();
        return await client.GetStringAsync(address);
    }

    /// <summary>Starts the host, asks who serves, and checks the factory Kestrel resolved agrees.</summary>
    private static async Task<string> ServeOnceAsync(IHost host)
    {
        await host.StartAsync();
        try
        {
            var address = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            string who = await GetAsync(address);
            var factory = host.Services.GetRequiredService<IoUringTransportFactory>();
            Assert.True(factory.IsUsingIoUring, factory.FallbackReason);
            // The factory Kestrel tries first (it reverses the registration order) is ours.
            Assert.IsType<IoUringTransportFactory>(host.Services.GetServices<IConnectionListenerFactory>().Last());
            return who;
        }
        finally
        {
            await host.StopAsync();
        }
    }

    private static Task<string> ServeOnceAsync(Action<IWebHostBuilder> configure)
        => ServeOnceAsync(new HostBuilder()
            .ConfigureWebHost(web =>
            {
                configure(web);
                web.ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0));
                web.Configure(MapWhoServes);
            })
            .Build());

    [Fact]
    public async Task UseIoUringAfterUseKestrelServes()
        => Assert.StartsWith("io_uring", await ServeOnceAsync(web => web.UseKestrel().UseIoUring()));

    [Fact]
    public async Task UseIoUringBeforeUseKestrelServes()
        => Assert.StartsWith("io_uring", await ServeOnceAsync(web => web.UseIoUring().UseKestrel()));

    [Fact]
    public async Task UseIoUringBeforeConfigureKestrelServes()
        => Assert.StartsWith("io_uring", await ServeOnceAsync(web => web.UseIoUring().ConfigureKestrel(_ => { }).UseKestrel()));

    [Fact]
    public async Task GenericHostDefaultsServe()
    {
        // Host.CreateDefaultBuilder + ConfigureWebHostDefaults calls UseKestrel before the app's own configuration.
        using var host = Host.CreateDefaultBuilder()
            .ConfigureLogging(l => l.ClearProviders())
            .ConfigureWebHostDefaults(web => web.UseIoUring().ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0)).Configure(MapWhoServes))
            .Build();
        Assert.StartsWith("io_uring", await ServeOnceAsync(host));
    }

    [Fact]
    public async Task WebHostCreateDefaultBuilderServes()
    {
        // The legacy IWebHost (obsolete in .NET 10, still used): CreateDefaultBuilder has already called UseKestrel.
#pragma warning disable ASPDEPR008
        using var host = WebHost.CreateDefaultBuilder()
            .ConfigureLogging(l => l.ClearProviders())
            .UseIoUring()
            .ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0))
            .Configure(MapWhoServes)
            .Build();
#pragma warning restore ASPDEPR008
        await host.StartAsync();
        try
        {
            string address = host.ServerFeatures.Get<IServerAddressesFeature>()!.Addresses.First();
            Assert.StartsWith("io_uring", await GetAsync(address));
            Assert.True(host.Services.GetRequiredService<IoUringTransportFactory>().IsUsingIoUring);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task WebApplicationBuilderWhichAlreadyCalledUseKestrelServes()
    {
        await using var server = await Infrastructure.IoUringTestServer.StartAsync(app =>
            app.MapGet("/", (HttpContext c) => c.Features.Get<IIoUringConnectionFeature>() is null ? "sockets" : "io_uring"));
        using var client = server.CreateClient();
        Assert.Equal("io_uring", await client.GetStringAsync("/"));
        Assert.True(server.Factory.IsUsingIoUring);
        Assert.Null(server.Factory.FallbackReason);
    }

    [Fact]
    public void CallingUseIoUringTwiceRegistersOneFactory()
    {
        using var host = new HostBuilder()
            .ConfigureWebHost(web => web.UseTestServer().UseIoUring().UseIoUring(o => o.RingCount = 1).Configure(_ => { }))
            .Build();
        var factories = host.Services.GetServices<IConnectionListenerFactory>().OfType<IoUringTransportFactory>().ToList();
        Assert.Single(factories);
        Assert.Equal(1, host.Services.GetRequiredService<IOptions<IoUringTransportOptions>>().Value.RingCount);
    }

    [Fact]
    public void ServiceRegistrationsAreInPlace()
    {
        // TestHost replaces IServer (so no socket is bound), which makes it the right tool to inspect the registrations.
        using var host = new HostBuilder()
            .ConfigureWebHost(web => web.UseTestServer().UseIoUring().Configure(_ => { }))
            .Build();
        Assert.IsType<IoUringTransportFactory>(host.Services.GetServices<IConnectionListenerFactory>().Last());
        Assert.Contains(host.Services.GetServices<IValidateOptions<IoUringTransportOptions>>(), v => v is IoUringTransportOptionsValidator);
        var factory = host.Services.GetRequiredService<IoUringTransportFactory>();
        Assert.True(factory.CanBind(new IPEndPoint(IPAddress.Loopback, 0)));
        Assert.True(factory.CanBind(new System.Net.Sockets.UnixDomainSocketEndPoint("/tmp/x.sock")));
        Assert.True(factory.CanBind(new FileHandleEndPoint(3, FileHandleType.Auto)));
        Assert.False(factory.CanBind(new DnsEndPoint("localhost", 80)));
    }
}
