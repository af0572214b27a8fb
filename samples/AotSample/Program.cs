using Kestrel.Transport.IoUring;

// A native-AOT web app over io_uring: the slim builder of the webapiaot template plus the one line.
var builder = WebApplication.CreateSlimBuilder(args);
builder.WebHost.UseIoUring();

var app = builder.Build();

app.MapGet("/", (HttpContext context) => context.Features.Get<IIoUringConnectionFeature>() is { } ring
    ? $"Hello from native AOT (served over io_uring, ring {ring.RingId})\n"
    : "Hello from native AOT (served by the Sockets transport: io_uring is unavailable, see the start-up log)\n");

app.MapGet("/capabilities", () => IoUringCapabilities.Current.ToString());

app.Run();
