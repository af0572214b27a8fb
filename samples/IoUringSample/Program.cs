using Kestrel.Transport.IoUring;
using OpenTelemetry.Metrics;

var builder = WebApplication.CreateBuilder(args);

// The one line: every HTTP/1.1, HTTP/2, HTTPS and WebSocket connection now travels over io_uring.
builder.WebHost.UseIoUring();

// /healthz says which transport serves: Healthy over io_uring, Degraded (with the reason) after a fall-back to Sockets.
builder.Services.AddHealthChecks().AddIoUringHealthCheck();

// Optional OpenTelemetry export of the transport's and Kestrel's metrics: Sample:OpenTelemetry = console (every 10 s
// to the console) or otlp (to OTEL_EXPORTER_OTLP_ENDPOINT, by default http://localhost:4317). Off by default.
switch (builder.Configuration["Sample:OpenTelemetry"]?.ToLowerInvariant())
{
    case "console":
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter("Kestrel.Transport.IoUring", "Microsoft.AspNetCore.Server.Kestrel")
            .AddConsoleExporter((_, reader) => reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = 10_000));
        break;
    case "otlp":
        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter("Kestrel.Transport.IoUring", "Microsoft.AspNetCore.Server.Kestrel")
            .AddOtlpExporter());
        break;
}

var app = builder.Build();

app.UseWebSockets();
app.MapHealthChecks("/healthz");

app.MapGet("/", (HttpContext context) =>
{
    var ring = context.Features.Get<IIoUringConnectionFeature>();
    return ring is null
        ? "Hello, World! (served by the Sockets transport: io_uring is unavailable, see the start-up log)\n"
        : $"Hello, World! (served over io_uring, ring {ring.RingId})\n";
});

// Echoes the request body back: try `curl --data-binary @file http://localhost:5000/echo`.
app.MapPost("/echo", async (HttpContext context) =>
{
    context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>()!.MaxRequestBodySize = null;
    context.Response.ContentType = "application/octet-stream";
    await context.Request.Body.CopyToAsync(context.Response.Body);
});

// A WebSocket echo on /ws.
app.Map("/ws", async (HttpContext context) =>
{
    if (!context.WebSockets.IsWebSocketRequest)
    {
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        return;
    }
    using var socket = await context.WebSockets.AcceptWebSocketAsync();
    var buffer = new byte[64 * 1024];
    while (true)
    {
        var result = await socket.ReceiveAsync(buffer, context.RequestAborted);
        if (result.MessageType == System.Net.WebSockets.WebSocketMessageType.Close)
        {
            await socket.CloseAsync(System.Net.WebSockets.WebSocketCloseStatus.NormalClosure, null, context.RequestAborted);
            return;
        }
        await socket.SendAsync(buffer.AsMemory(0, result.Count), result.MessageType, result.EndOfMessage, context.RequestAborted);
    }
});

// The kernel's io_uring capabilities, as the transport probed them.
app.MapGet("/capabilities", () => IoUringCapabilities.Current.ToString());

app.Run();

/// <summary>Visible to the tests (WebApplicationFactory-style hosting).</summary>
public partial class Program { }
