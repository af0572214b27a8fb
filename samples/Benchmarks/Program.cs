// TechEmpower-style benchmark server for Kestrel.Transport.IoUring.
//
//   dotnet Benchmarks.dll --transport iouring|sockets --scheduling threadpool|inline --mode aspnet|platform --urls http://127.0.0.1:5000
//                         [--h2c-urls http://127.0.0.1:5001] [--tls-urls https://127.0.0.1:5002 --cert cert.pem --key key.pem]
//
// aspnet:   the full ASP.NET Core pipeline. One middleware before routing serves /plaintext, /json, /download?size=N,
//           /block?ms=N (blocks its pool thread, for the thread-pool starvation scenario) and /spin?ms=N (keeps it busy on
//           the CPU, for loadtests/cpu-contention.sh); behind it, app-shaped endpoints (AppEndpoints.cs): a JSON API
//           through minimal APIs and System.Text.Json, uploads and static files; HTTP/1.1 on --urls,
//           HTTP/2 with prior knowledge on --h2c-urls, HTTP/1.1 and HTTP/2 (ALPN) over TLS on --tls-urls.
// platform: a connection middleware on the transport's pipes with Kestrel's HttpParser<T> (no HTTP stack): /plaintext and /json,
//           pipelining supported; it exposes the transport's own cost.
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Benchmarks;
using Kestrel.Transport.IoUring;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var settings = BenchmarkSettings.Parse(args, out string[] rest);

// No watcher on the configuration files: the content root is wherever the load scripts run, and a recursive watcher
// there wakes up for every file they write, and that CPU would be counted against whichever transport is measured.
var builder = WebApplication.CreateBuilder([.. rest, "--hostBuilder:reloadConfigOnChange=false"]);

// io_uring options come from configuration (Kestrel:IoUring, e.g. the environment variable Kestrel__IoUring__SqPoll=true).
// A key that names no option would be ignored silently and the run would measure something else than it says: refuse it.
IReadOnlyList<string> ioUringOverrides;
try
{
    ioUringOverrides = IoUringOptionOverrides.Read(builder.Configuration);
}
catch (InvalidOperationException e)
{
    Console.Error.WriteLine($"Benchmarks: unknown io_uring option in {WebHostBuilderIoUringExtensions.ConfigurationSection}: {e.Message}");
    return 3;
}

X509Certificate2? certificate = settings.TlsEndPoints.Count > 0
    ? X509Certificate2.CreateFromPemFile(settings.CertificatePath!, settings.KeyPath)
    : null;
builder.Logging.ClearProviders();
builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
builder.Logging.SetMinimumLevel(LogLevel.Warning);

builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.AddServerHeader = true; // the default; TechEmpower requires Server
    foreach (IPEndPoint endpoint in settings.EndPoints)
    {
        kestrel.Listen(endpoint, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            if (settings.Mode == BenchmarkMode.Platform)
            {
                listen.UseConnectionHandler<PlatformConnectionHandler>();
            }
        });
    }
    foreach (IPEndPoint endpoint in settings.H2cEndPoints)
    {
        kestrel.Listen(endpoint, listen => listen.Protocols = HttpProtocols.Http2);
    }
    foreach (IPEndPoint endpoint in settings.TlsEndPoints)
    {
        kestrel.Listen(endpoint, listen =>
        {
            listen.Protocols = HttpProtocols.Http1AndHttp2;
            listen.UseHttps(certificate!);
        });
    }
});

if (settings.Transport == TransportKind.IoUring)
{
    builder.WebHost.UseIoUring(o => o.ApplicationScheduling = settings.Inline ? ApplicationSchedulingMode.Inline : ApplicationSchedulingMode.ThreadPool);
}
else
{
    builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = settings.Inline);
}

AppEndpoints.ConfigureServices(builder.Services);
var app = builder.Build();
if (settings.Mode == BenchmarkMode.AspNet)
{
    // The TechEmpower paths answer before routing (their cost is the transport's and Kestrel's alone); anything else
    // goes on to the app-shaped endpoints (AppEndpoints.cs).
    app.Use(next => context => AspNetEndpoints.TryHandle(context) ?? next(context));
    AppEndpoints.Map(app);
}

await app.StartAsync();

// One line naming the transport actually serving (io_uring may have fallen back to Sockets).
string transport;
if (settings.Transport == TransportKind.IoUring)
{
    var factory = app.Services.GetRequiredService<IoUringTransportFactory>();
    transport = factory.IsUsingIoUring
        ? $"io_uring ({factory.RingCount} ring(s), scheduling {(settings.Inline ? "inline" : "threadpool")}" +
          (ioUringOverrides.Count > 0 ? $", options {string.Join(" ", ioUringOverrides)})" : ")")
        : $"Sockets (io_uring requested but fell back: {factory.FallbackReason})";
}
else
{
    string inlineCompletions = Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") ?? "unset";
    transport = $"Sockets (UnsafePreferInlineScheduling={settings.Inline}, DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS={inlineCompletions})";
}
string listening = string.Join(", ", settings.EndPoints.Select(e => $"http {e}")
    .Concat(settings.H2cEndPoints.Select(e => $"h2c {e}"))
    .Concat(settings.TlsEndPoints.Select(e => $"https {e}")));
Console.WriteLine($"Benchmarks: transport {transport}; mode {settings.Mode}; listening on {listening}; " +
    $"pid {Environment.ProcessId}; {Environment.ProcessorCount} processor(s); server GC {System.Runtime.GCSettings.IsServerGC}; " +
    $"thread pool spin limit {ThreadPoolSpinLimit()}");

await app.WaitForShutdownAsync();
return 0;

// How long an idle thread-pool worker spins before it sleeps, as the runtime reads it: the runtimeconfig setting, else
// the environment variable (a CLR config value, so hexadecimal), else the runtime's default. It shapes CPU per request
// on few cores (loadtests/threadpool-spin.sh measures it), so the banner records it.
static string ThreadPoolSpinLimit() =>
    AppContext.GetData("System.Threading.ThreadPool.UnfairSemaphoreSpinLimit")?.ToString()
    ?? Environment.GetEnvironmentVariable("DOTNET_ThreadPool_UnfairSemaphoreSpinLimit")
    ?? "default";
