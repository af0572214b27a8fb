using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Benchmarks;

/// <summary>The aspnet mode: one terminal middleware (as TechEmpower's "middleware" variant), no routing.</summary>
public static class AspNetEndpoints
{
    public static readonly byte[] PlaintextBody = "Hello, World!"u8.ToArray();
    private const int DefaultDownloadSize = 1024 * 1024;
    private const int MaxDownloadSize = 64 * 1024 * 1024;
    private const int MaxBlockMilliseconds = 60_000;
    private static byte[] s_download = CreateDownload(DefaultDownloadSize);

    [ThreadStatic] private static ArrayBufferWriter<byte>? t_jsonBuffer;
    [ThreadStatic] private static Utf8JsonWriter? t_jsonWriter;

    /// <summary>Serves a TechEmpower path, or returns null for the next middleware.</summary>
    public static Task? TryHandle(HttpContext context)
    {
        string? path = context.Request.Path.Value;
        if (string.Equals(path, "/plaintext", StringComparison.Ordinal))
        {
            return Plaintext(context.Response);
        }
        if (string.Equals(path, "/json", StringComparison.Ordinal))
        {
            return Json(context.Response);
        }
        if (string.Equals(path, "/download", StringComparison.Ordinal))
        {
            return Download(context);
        }
        if (string.Equals(path, "/block", StringComparison.Ordinal))
        {
            return Block(context);
        }
        if (string.Equals(path, "/spin", StringComparison.Ordinal))
        {
            return Spin(context);
        }
        return null;
    }

    private static Task Plaintext(HttpResponse response)
    {
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/plain";
        response.ContentLength = PlaintextBody.Length;
        response.BodyWriter.Write(PlaintextBody); // Kestrel flushes when the request ends
        return Task.CompletedTask;
    }

    private static Task Json(HttpResponse response)
    {
        // Serialized on every request (TechEmpower's rule), into a per-thread buffer so Content-Length is exact.
        ReadOnlySpan<byte> body = JsonMessage.Serialize(ref t_jsonBuffer, ref t_jsonWriter);
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/json";
        response.ContentLength = body.Length;
        response.BodyWriter.Write(body);
        return Task.CompletedTask;
    }

    private static Task Download(HttpContext context)
    {
        int size = DefaultDownloadSize;
        if (context.Request.Query.TryGetValue("size", out var values))
        {
            if (!int.TryParse(values.ToString(), out size) || size < 0 || size > MaxDownloadSize)
            {
                context.Response.StatusCode = StatusCodes.Status400BadRequest;
                return Task.CompletedTask;
            }
        }
        byte[] buffer = s_download;
        if (buffer.Length < size)
        {
            s_download = buffer = CreateDownload(size);
        }
        context.Response.StatusCode = StatusCodes.Status200OK;
        context.Response.ContentType = "application/octet-stream";
        context.Response.ContentLength = size;
        return context.Response.Body.WriteAsync(buffer, 0, size);
    }

    /// <summary>
    /// /block?ms=N: sleeps on its pool thread, as a handler doing synchronous I/O or waiting on .Result does. The
    /// starvation scenario fires many of these to starve the thread pool while it measures trivial requests.
    /// </summary>
    private static Task Block(HttpContext context)
    {
        if (!int.TryParse(context.Request.Query["ms"].ToString(), out int milliseconds) || milliseconds < 0 || milliseconds > MaxBlockMilliseconds)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return Task.CompletedTask;
        }
        Thread.Sleep(milliseconds);
        return Plaintext(context.Response);
    }

    /// <summary>
    /// /spin?ms=N: keeps its pool thread busy on the CPU for N ms, as a CPU-bound handler does. loadtests/cpu-contention.sh
    /// fires these beside trivial requests to see how long a receive waits while the core is busy.
    /// </summary>
    private static Task Spin(HttpContext context)
    {
        if (!int.TryParse(context.Request.Query["ms"].ToString(), out int milliseconds) || milliseconds < 0 || milliseconds > MaxBlockMilliseconds)
        {
            context.Response.StatusCode = StatusCodes.Status400BadRequest;
            return Task.CompletedTask;
        }
        long end = System.Diagnostics.Stopwatch.GetTimestamp() + milliseconds * System.Diagnostics.Stopwatch.Frequency / 1000;
        while (System.Diagnostics.Stopwatch.GetTimestamp() < end)
        {
            Thread.SpinWait(20);
        }
        return Plaintext(context.Response);
    }

    private static byte[] CreateDownload(int size)
    {
        var buffer = GC.AllocateUninitializedArray<byte>(size, pinned: true);
        for (int i = 0; i < buffer.Length; i++)
        {
            buffer[i] = (byte)('a' + i % 26);
        }
        return buffer;
    }
}

public readonly struct JsonMessage
{
    [JsonPropertyName("message")]
    public string Message { get; init; }

    private static readonly JsonMessage s_hello = new() { Message = "Hello, World!" };

    /// <summary>Serializes {"message":"Hello, World!"} with the source generator into a reusable per-thread buffer.</summary>
    public static ReadOnlySpan<byte> Serialize(ref ArrayBufferWriter<byte>? buffer, ref Utf8JsonWriter? writer)
    {
        buffer ??= new ArrayBufferWriter<byte>(64);
        buffer.ResetWrittenCount();
        if (writer is null)
        {
            writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { SkipValidation = true });
        }
        else
        {
            writer.Reset(buffer);
        }
        JsonSerializer.Serialize(writer, s_hello, BenchmarkJsonContext.Default.JsonMessage);
        return buffer.WrittenSpan;
    }
}

[JsonSerializable(typeof(JsonMessage))]
public partial class BenchmarkJsonContext : JsonSerializerContext
{
}

/// <summary>The Date header value, formatted once a second (RFC 7231 IMF-fixdate), shared by the platform mode.</summary>
public static class DateHeader
{
    private static byte[] s_value = Format();
    private static readonly Timer s_timer = new(_ => s_value = Format(), null, 1000, 1000);

    /// <summary>"\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT"</summary>
    public static ReadOnlySpan<byte> CrLfDate => Volatile.Read(ref s_value);

    private static byte[] Format()
    {
        GC.KeepAlive(s_timer);
        return Encoding.ASCII.GetBytes("\r\nDate: " + DateTimeOffset.UtcNow.ToString("r"));
    }
}
