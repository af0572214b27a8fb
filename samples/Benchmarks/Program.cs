// TechEmpower-style benchmark server for Kestrel.Transport.IoUring.
//
//   dotnet Benchmarks.dll --transport iouring|sockets --scheduling threadpool|inline --mode aspnet|platform --urls http://127.0.0.1:5000
//
// aspnet:   the full ASP.NET Core pipeline (one terminal middleware, no routing) serving /plaintext, /json, /download?size=N.
// platform: a connection middleware on the transport's pipes with Kestrel's HttpParser<T> (no HTTP stack): /plaintext and /json,
//           pipelining supported; it exposes the transport's own cost.
using System.Net;
using Benchmarks;
using Kestrel.Transport.IoUring;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var settings = BenchmarkSettings.Parse(args, out string[] rest);

var builder = WebApplication.CreateBuilder(rest);
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
});

if (settings.Transport == TransportKind.IoUring)
{
    builder.WebHost.UseIoUring(o => o.ApplicationScheduling = settings.Inline ? ApplicationSchedulingMode.Inline : ApplicationSchedulingMode.ThreadPool);
}
else
{
    builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = settings.Inline);
}

var app = builder.Build();
if (settings.Mode == BenchmarkMode.AspNet)
{
    app.Run(AspNetEndpoints.Handle);
}

await app.StartAsync();

// One line naming the transport actually serving (io_uring may have fallen back to Sockets).
string transport;
if (settings.Transport == TransportKind.IoUring)
{
    var factory = app.Services.GetRequiredService<IoUringTransportFactory>();
    transport = factory.IsUsingIoUring
        ? $"io_uring ({factory.RingCount} ring(s), scheduling {(settings.Inline ? "inline" : "threadpool")})"
        : $"Sockets (io_uring requested but fell back: {factory.FallbackReason})";
}
else
{
    string inlineCompletions = Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") ?? "unset";
    transport = $"Sockets (UnsafePreferInlineScheduling={settings.Inline}, DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS={inlineCompletions})";
}
Console.WriteLine($"Benchmarks: transport {transport}; mode {settings.Mode}; listening on {string.Join(", ", settings.EndPoints)}; " +
    $"pid {Environment.ProcessId}; {Environment.ProcessorCount} processor(s); server GC {System.Runtime.GCSettings.IsServerGC}");

await app.WaitForShutdownAsync();
