using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Kestrel.Transport.IoUring.Tests.Infrastructure;

/// <summary>
/// A real Kestrel server on loopback, serving over the io_uring transport, for integration tests. Start it with
/// <see cref="StartAsync"/>; by default it binds 127.0.0.1 on a free port and fails if io_uring is not the transport
/// actually serving (never a silent fall-back to Sockets).
/// </summary>
public sealed class IoUringTestServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private IoUringTestServer(WebApplication app)
    {
        _app = app;
    }

    public WebApplication App => _app;

    public IServiceProvider Services => _app.Services;

    /// <summary>The transport factory Kestrel resolved.</summary>
    public IoUringTransportFactory Factory => _app.Services.GetRequiredService<IoUringTransportFactory>();

    /// <summary>Every log record written while the server ran.</summary>
    public TestLogSink Logs { get; } = new();

    /// <summary>Addresses Kestrel reports, e.g. "http://127.0.0.1:41234".</summary>
    public IReadOnlyList<string> Addresses => _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToArray();

    /// <summary>The first bound address as a base URI.</summary>
    public Uri BaseAddress => new(Addresses[0]);

    /// <summary>The first bound TCP port.</summary>
    public int Port => BaseAddress.Port;

    /// <summary>
    /// Builds and starts a server. <paramref name="configureApp"/> maps endpoints (default: "/" answers "hello");
    /// <paramref name="configureKestrel"/> sets listen endpoints (default: 127.0.0.1 port 0, HTTP/1.1 and HTTP/2);
    /// <paramref name="configureTransport"/> tunes the transport options.
    /// </summary>
    public static async Task<IoUringTestServer> StartAsync(
        Action<WebApplication>? configureApp = null,
        Action<KestrelServerOptions>? configureKestrel = null,
        Action<IoUringTransportOptions>? configureTransport = null,
        Action<IServiceCollection>? configureServices = null,
        bool requireIoUring = true)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { EnvironmentName = "Development" });
        var sink = new TestLogSink();
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.Logging.AddProvider(sink);
        // A provider-specific rule wins over any "Logging" section an appsettings.json in the output directory brings
        // (a referenced project's file is copied there): the sink always sees every record down to Debug.
        builder.Logging.AddFilter<TestLogSink>(null, LogLevel.Debug);
        builder.WebHost.UseIoUring(o =>
        {
            o.RingCount = 2;
            configureTransport?.Invoke(o);
        });
        builder.WebHost.ConfigureKestrel(options =>
        {
            if (configureKestrel is not null)
            {
                configureKestrel(options);
            }
            else
            {
                options.Listen(IPAddress.Loopback, 0, l => l.Protocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http1AndHttp2);
            }
        });
        builder.Host.ConfigureHostOptions(o => o.ShutdownTimeout = TimeSpan.FromSeconds(10));
        configureServices?.Invoke(builder.Services);

        var app = builder.Build();
        if (configureApp is not null)
        {
            configureApp(app);
        }
        else
        {
            app.MapGet("/", () => "hello");
        }

        var server = new IoUringTestServer(app);
        server.Logs.CopyFrom(sink);
        await app.StartAsync();
        if (requireIoUring && !server.Factory.IsUsingIoUring)
        {
            await app.DisposeAsync();
            throw new InvalidOperationException($"The io_uring transport is not serving: {server.Factory.FallbackReason}");
        }
        return server;
    }

    public HttpClient CreateClient(Version? version = null)
    {
        var client = new HttpClient(new SocketsHttpHandler { PooledConnectionLifetime = TimeSpan.FromMinutes(5) })
        {
            BaseAddress = BaseAddress,
            Timeout = TimeSpan.FromSeconds(60),
        };
        if (version is not null)
        {
            client.DefaultRequestVersion = version;
            client.DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        }
        return client;
    }

    public Task StopAsync(CancellationToken cancellationToken = default) => _app.StopAsync(cancellationToken);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
