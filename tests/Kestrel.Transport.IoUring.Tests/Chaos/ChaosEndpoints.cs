using System.Globalization;
using System.Net.WebSockets;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>
/// The handlers a chaos client asks for. GET /data?mode=M&amp;n=N&amp;seed=S answers N bytes of
/// <see cref="PatternData"/> (with a Content-Length, so a cut-short response is visible) written the way M says;
/// POST /upload answers the SHA-256 and length of the body; /ws echoes WebSocket messages.
/// </summary>
internal static class ChaosEndpoints
{
    private static readonly object BlockingLock = new();

    public static void Map(WebApplication app)
    {
        app.UseWebSockets();
        app.MapGet("/data", Data);
        app.MapPost("/upload", async (HttpContext c) =>
        {
            var (hash, length) = await ProtocolEndpoints.HashBodyAsync(c.Request.Body);
            string answer = $"{hash} {length}";
            c.Response.ContentLength = answer.Length;
            await c.Response.WriteAsync(answer);
        });
        app.Map("/ws", Echo);
    }

    private static async Task Data(HttpContext c)
    {
        var mode = Enum.Parse<HandlerMode>(c.Request.Query["mode"]!);
        long n = long.Parse(c.Request.Query["n"]!, CultureInfo.InvariantCulture);
        ulong seed = ulong.Parse(c.Request.Query["seed"]!, CultureInfo.InvariantCulture);
        c.Response.ContentLength = n;
        long offset = 0;
        var buffer = new byte[mode == HandlerMode.SyncWrites ? 256 * 1024 : 64 * 1024];
        int writes = 0;
        while (offset < n)
        {
            int size = (int)Math.Min(n - offset, mode switch
            {
                HandlerMode.ManyFlushes => 1 + (int)(offset * 7919 % 16384),
                HandlerMode.Events => 100,
                _ => buffer.Length,
            });
            PatternData.Fill(buffer.AsSpan(0, size), offset, seed);
            if (mode == HandlerMode.SyncWrites)
            {
                c.Features.GetRequiredFeature<IHttpBodyControlFeature>().AllowSynchronousIO = true;
                c.Response.Body.Write(buffer, 0, size); // larger than the output pipe's pause threshold
            }
            else
            {
                await c.Response.Body.WriteAsync(buffer.AsMemory(0, size));
            }
            offset += size;
            writes++;
            if (mode is HandlerMode.ManyFlushes or HandlerMode.Events or HandlerMode.FlushThenBlock)
            {
                await c.Response.Body.FlushAsync();
            }
            if (offset >= n / 2 && await CutShortAsync(c, mode, writes))
            {
                return;
            }
        }
    }

    /// <summary>Halfway through: blocks the thread, throws or aborts, as <paramref name="mode"/> says; true when the response ends here.</summary>
    private static Task<bool> CutShortAsync(HttpContext c, HandlerMode mode, int writes)
    {
        switch (mode)
        {
            case HandlerMode.FlushThenBlock when writes <= 1 || writes % 8 == 0:
                Block(writes);
                return Task.FromResult(false);
            case HandlerMode.Throw:
                throw new InvalidOperationException("chaos: the handler throws mid-response");
            case HandlerMode.Abort:
                c.Abort();
                return Task.FromResult(true);
            default:
                return Task.FromResult(false);
        }
    }

    /// <summary>Holds the pool thread: a sleep, a sync-over-async wait, or a contended lock.</summary>
    private static void Block(int writes)
    {
        switch (writes % 3)
        {
            case 0:
                Thread.Sleep(30);
                break;
            case 1:
                Task.Delay(30).Wait();
                break;
            default:
                lock (BlockingLock)
                {
                    Thread.Sleep(20);
                }
                break;
        }
    }

    private static async Task Echo(HttpContext c)
    {
        if (!c.WebSockets.IsWebSocketRequest)
        {
            c.Response.StatusCode = 400;
            return;
        }
        using var socket = await c.WebSockets.AcceptWebSocketAsync();
        var buffer = new byte[64 * 1024];
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, c.RequestAborted);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, c.RequestAborted);
                return;
            }
            await socket.SendAsync(buffer.AsMemory(0, result.Count), result.MessageType, result.EndOfMessage, c.RequestAborted);
        }
    }
}
