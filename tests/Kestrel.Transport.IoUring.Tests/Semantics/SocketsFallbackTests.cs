using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// When io_uring cannot serve, the app behaves as if UseIoUring() were absent: Kestrel's Sockets factory binds, with
/// the app's own SocketTransportOptions (UseSockets), in whichever order the calls come. When io_uring can serve, it
/// does, in whichever order. And io_uring has its own listen-socket hook.
/// </summary>
public sealed class SocketsFallbackTests
{
    public enum CallOrder { UseSocketsThenUseIoUring, UseIoUringThenUseSockets, UseIoUringThenUseKestrelThenUseSockets }

    private static void MapWhoServes(IApplicationBuilder app) => app.Run(c =>
        c.Response.WriteAsync(c.Features.Get<IIoUringConnectionFeature>() is null ? "sockets" : "io_uring"));

    /// <summary>A host whose UseSockets hook counts its calls, in the given call order, serving on 127.0.0.1:0.</summary>
    private static IHost BuildHost(CallOrder order, Action<IoUringTransportOptions> configureIoUring, Action<EndPoint> socketsHookCalled)
    {
        void UseSockets(IWebHostBuilder web) => web.UseSockets(o =>
        {
            o.CreateBoundListenSocket = endpoint =>
            {
                socketsHookCalled(endpoint);
                return SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
            };
        });

        return new HostBuilder()
            .ConfigureLogging(l => l.ClearProviders())
            .ConfigureWebHost(web =>
            {
                switch (order)
                {
                    case CallOrder.UseSocketsThenUseIoUring:
                        web.UseKestrel();
                        UseSockets(web);
                        web.UseIoUring(configureIoUring);
                        break;
                    case CallOrder.UseIoUringThenUseSockets:
                        web.UseIoUring(configureIoUring);
                        UseSockets(web);
                        web.UseKestrel();
                        break;
                    case CallOrder.UseIoUringThenUseKestrelThenUseSockets:
                        web.UseIoUring(configureIoUring);
                        web.UseKestrel();
                        UseSockets(web);
                        break;
                }
                web.ConfigureKestrel(o => o.Listen(IPAddress.Loopback, 0));
                web.Configure(MapWhoServes);
            })
            .Build();
    }

    private static async Task<string> ServeOnceAsync(IHost host)
    {
        await host.StartAsync();
        try
        {
            string address = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var client = new HttpClient();
            return await client.GetStringAsync(address);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Theory]
    [InlineData(CallOrder.UseSocketsThenUseIoUring)]
    [InlineData(CallOrder.UseIoUringThenUseSockets)]
    [InlineData(CallOrder.UseIoUringThenUseKestrelThenUseSockets)]
    public async Task UnderFallBackTheAppsUseSocketsSettingsTakeEffect(CallOrder order)
    {
        var hookSaw = new List<EndPoint>();
        using var host = BuildHost(order, o => o.SimulatedSetupErrno = 1, hookSaw.Add);
        Assert.Equal("sockets", await ServeOnceAsync(host));
        Assert.Contains("EPERM", host.Services.GetRequiredService<IoUringTransportFactory>().FallbackReason);
        var endpoint = Assert.IsType<IPEndPoint>(Assert.Single(hookSaw));
        Assert.Equal(IPAddress.Loopback, endpoint.Address);
    }

    [Theory]
    [InlineData(CallOrder.UseSocketsThenUseIoUring)]
    [InlineData(CallOrder.UseIoUringThenUseSockets)]
    [InlineData(CallOrder.UseIoUringThenUseKestrelThenUseSockets)]
    public async Task WhenIoUringCanServeItWinsInEitherOrder(CallOrder order)
    {
        var hookSaw = new List<EndPoint>();
        using var host = BuildHost(order, o => o.RingCount = 1, hookSaw.Add);
        Assert.Equal("io_uring", await ServeOnceAsync(host));
        Assert.True(host.Services.GetRequiredService<IoUringTransportFactory>().IsUsingIoUring);
        Assert.Empty(hookSaw); // the Sockets factory never bound anything
    }

    [Fact]
    public async Task TheIoUringListenSocketHookCanSetReusePortSoTwoServersShareAPort()
    {
        // SO_REUSEPORT (15 on Linux) before bind: the second server binds the same port instead of AddressInUse.
        const int SolSocket = 1, SoReusePort = 15;
        var hookSaw = new List<EndPoint>();
        Socket CreateWithReusePort(EndPoint endpoint)
        {
            lock (hookSaw) hookSaw.Add(endpoint);
            var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.SetRawSocketOption(SolSocket, SoReusePort, BitConverter.GetBytes(1));
            socket.Bind(endpoint);
            return socket;
        }

        await using var first = await Infrastructure.IoUringTestServer.StartAsync(configureTransport: o => o.CreateBoundListenSocket = CreateWithReusePort);
        int port = first.Port;
        await using var second = await Infrastructure.IoUringTestServer.StartAsync(
            configureKestrel: k => k.Listen(IPAddress.Loopback, port),
            configureTransport: o => o.CreateBoundListenSocket = CreateWithReusePort);
        Assert.Equal(port, second.Port);
        Assert.Equal(2, hookSaw.Count);
        using var client = first.CreateClient();
        Assert.Equal("hello", await client.GetStringAsync("/"));

        // Without the hook, the same port is taken.
        var e = await Assert.ThrowsAnyAsync<Exception>(() => Infrastructure.IoUringTestServer.StartAsync(configureKestrel: k => k.Listen(IPAddress.Loopback, port)));
        Assert.True(e is IOException || e.InnerException is AddressInUseException || e is AddressInUseException, e.ToString());
    }
}
