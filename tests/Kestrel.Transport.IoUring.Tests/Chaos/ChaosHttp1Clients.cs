using System.Net.Sockets;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Protocols;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>The HTTP/1.1 clients, over raw sockets so that their timing (pauses, half-closes, resets) is exact.</summary>
internal static class ChaosHttp1Clients
{
    public static string Get(ClientPlan p, long size, ulong seed, bool close = false)
        => $"GET /data?mode={p.Handler}&n={size}&seed={seed} HTTP/1.1\r\nHost: chaos\r\n{(close ? "Connection: close\r\n" : "")}\r\n";

    public static async Task ReadDataAsync(RawHttpConnection c, ClientPlan p, long size, ulong seed, CancellationToken ct, Func<Task>? betweenReads = null)
    {
        var (status, headers) = await c.ReadHeadAsync(ct);
        if (status != 200 || headers["content-length"] != size.ToString())
        {
            throw new UnexpectedResponseException($"status {status}, content-length {headers.GetValueOrDefault("content-length")} for {size} bytes");
        }
        var verifier = new PatternVerifier(seed, size, $"client {p.Id} response");
        await c.ReadBodyAsync(size, verifier.Append, ct, betweenReads);
        verifier.EnsureComplete();
    }

    public static async Task KeepAliveAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        for (int i = 0; i < p.Count; i++)
        {
            await c.SendAsync(Get(p, p.Size + i, p.DataSeed + (ulong)i), ct);
            await ReadDataAsync(c, p, p.Size + i, p.DataSeed + (ulong)i, ct);
        }
    }

    public static async Task PipelinedAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        var burst = new StringBuilder();
        for (int i = 0; i < p.Count; i++)
        {
            burst.Append(Get(p, p.Size + i, p.DataSeed + (ulong)i));
        }
        await c.SendAsync(burst.ToString(), ct);
        for (int i = 0; i < p.Count; i++)
        {
            await ReadDataAsync(c, p, p.Size + i, p.DataSeed + (ulong)i, ct);
        }
    }

    public static async Task DownloadAsync(int port, ClientPlan p, CancellationToken ct, bool slowReader)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct, receiveBufferSize: slowReader ? 4096 : null);
        await c.SendAsync(Get(p, p.Size, p.DataSeed), ct);
        bool paused = false;
        // A slow reader stops reading (its window closes) once, after the first piece, for PauseMs.
        await ReadDataAsync(c, p, p.Size, p.DataSeed, ct, slowReader ? async () =>
        {
            if (!paused)
            {
                paused = true;
                await Task.Delay(p.PauseMs, ct);
            }
        } : null);
    }

    public static async Task UploadAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        await c.SendAsync($"POST /upload HTTP/1.1\r\nHost: chaos\r\nContent-Length: {p.Size}\r\n\r\n", ct);
        var buffer = new byte[64 * 1024];
        var random = new Random((int)p.DataSeed);
        for (long offset = 0; offset < p.Size;)
        {
            int n = (int)Math.Min(random.Next(1, buffer.Length + 1), p.Size - offset);
            PatternData.Fill(buffer.AsSpan(0, n), offset, p.DataSeed);
            await c.SendAsync(buffer.AsMemory(0, n), ct);
            offset += n;
        }
        var (status, _, body) = await c.ReadResponseAsync(ct);
        string expected = $"{PatternData.Sha256(p.Size, p.DataSeed)} {p.Size}";
        if (status != 200)
        {
            throw new UnexpectedResponseException($"upload status {status}");
        }
        if (body != expected)
        {
            throw new CorruptionException($"client {p.Id} upload: the server hashed '{body}', the client sent '{expected}'");
        }
    }

    /// <summary>Slowloris: the request head trickles in a few bytes at a time, spread over PauseMs.</summary>
    public static async Task SlowlorisAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        byte[] head = Encoding.ASCII.GetBytes(Get(p, p.Size, p.DataSeed));
        int pieces = Math.Min(head.Length, 1 + p.Count * 4);
        for (int i = 0; i < pieces; i++)
        {
            int from = head.Length * i / pieces, to = head.Length * (i + 1) / pieces;
            await c.SendAsync(head.AsMemory(from, to - from), ct);
            await Task.Delay(p.PauseMs / pieces, ct);
        }
        await ReadDataAsync(c, p, p.Size, p.DataSeed, ct);
    }

    /// <summary>Sends the request, then FIN (no more requests); the whole response must still arrive, then the server's FIN.</summary>
    public static async Task HalfCloseAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        await c.SendAsync(Get(p, p.Size, p.DataSeed), ct);
        c.Socket.Shutdown(SocketShutdown.Send);
        await ReadDataAsync(c, p, p.Size, p.DataSeed, ct);
        if (!await c.ReadsEndOfStreamAsync(ct))
        {
            throw new UnexpectedResponseException("bytes after the response to a half-closed connection");
        }
    }

    /// <summary>Resets (linger 0) in the middle of a request head or body.</summary>
    public static async Task ResetMidRequestAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        string head = p.Count % 2 == 0 ? Get(p, p.Size, p.DataSeed)[..20] : $"POST /upload HTTP/1.1\r\nHost: chaos\r\nContent-Length: {p.Size + 10}\r\n\r\n";
        await c.SendAsync(head + new string('x', (int)Math.Min(p.Size, 4096)), ct);
        await Task.Delay(p.PauseMs / 4, ct);
        Reset(c.Socket);
    }

    /// <summary>Resets (linger 0) after a part of a response arrived.</summary>
    public static async Task ResetMidResponseAsync(int port, ClientPlan p, CancellationToken ct)
    {
        await using var c = await RawHttpConnection.ConnectAsync(port, ct);
        await c.SendAsync(Get(p, p.Size, p.DataSeed), ct);
        await c.ReadHeadAsync(ct);
        long part = Math.Max(1, p.Size / (p.Count + 1));
        await c.ReadBodyAsync(part, new PatternVerifier(p.DataSeed, p.Size, $"client {p.Id} response").Append, ct);
        Reset(c.Socket);
    }

    /// <summary>Many short connections, each one request, ended alternately by FIN and by RST.</summary>
    public static async Task ChurnAsync(int port, ClientPlan p, CancellationToken ct)
    {
        for (int i = 0; i < p.Count * 3; i++)
        {
            await using var c = await RawHttpConnection.ConnectAsync(port, ct);
            long size = 1 + (p.Size + i) % 4096;
            await c.SendAsync(Get(p, size, p.DataSeed + (ulong)i), ct);
            await ReadDataAsync(c, p, size, p.DataSeed + (ulong)i, ct);
            if (i % 2 == 1)
            {
                Reset(c.Socket);
            }
        }
    }

    public static void Reset(Socket socket)
    {
        socket.LingerState = new LingerOption(true, 0);
        socket.Close();
    }
}
