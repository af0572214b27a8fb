using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Net.WebSockets;
using System.Security.Cryptography;
using System.Text;

namespace SoakClient;

/// <summary>
/// One operation of each workload. Each method either records its success in <see cref="SoakStats"/> or throws; the
/// worker loop counts what it throws as an unexpected error. Resets are deliberate and counted apart.
/// </summary>
internal sealed class Workloads : IDisposable
{
    private const string HelloMarker = "served over io_uring";

    private readonly SoakOptions _options;
    private readonly SoakStats _stats;
    private readonly Uri _root;
    private readonly Uri _echo;
    private readonly Uri _ws;
    private readonly IPEndPoint _endPoint;
    private readonly string _host;
    private readonly HttpClient _keepAliveClient;
    private readonly HttpClient _uploadClient;
    private readonly byte[] _randomPool;
    private readonly byte[] _asciiPool;

    public Workloads(SoakOptions options, SoakStats stats)
    {
        _options = options;
        _stats = stats;
        _root = options.BaseUrl;
        _echo = new Uri(options.BaseUrl, "echo");
        _ws = new UriBuilder(new Uri(options.BaseUrl, "ws")) { Scheme = "ws" }.Uri;
        IPAddress address = IPAddress.TryParse(options.BaseUrl.Host, out IPAddress? parsed)
            ? parsed
            : Dns.GetHostAddresses(options.BaseUrl.Host).First(a => a.AddressFamily == AddressFamily.InterNetwork);
        _endPoint = new IPEndPoint(address, options.BaseUrl.Port);
        _host = options.BaseUrl.Authority;
        _keepAliveClient = CreateClient(Math.Max(1, options.KeepAliveWorkers));
        _uploadClient = CreateClient(Math.Max(1, options.UploadWorkers));

        var rnd = new Random(options.Seed);
        _randomPool = new byte[2 * Math.Max(options.MaxUploadBytes, options.MaxWebSocketMessageBytes)];
        rnd.NextBytes(_randomPool);
        _asciiPool = new byte[2 * options.MaxWebSocketMessageBytes];
        for (int i = 0; i < _asciiPool.Length; i++)
        {
            _asciiPool[i] = (byte)rnd.Next(0x20, 0x7F);
        }
    }

    /// <summary>Keep-alive HTTP/1.1 connections, at most one per worker, kept for the whole run.</summary>
    private static HttpClient CreateClient(int connections) => new(new SocketsHttpHandler
    {
        MaxConnectionsPerServer = connections,
        PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
        PooledConnectionIdleTimeout = TimeSpan.FromMinutes(10),
        UseProxy = false,
        UseCookies = false,
        AutomaticDecompression = DecompressionMethods.None,
    })
    {
        DefaultRequestVersion = HttpVersion.Version11,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
        Timeout = Timeout.InfiniteTimeSpan, // the worker loop's per-operation token times out
    };

    private void CheckHello(int status, string body, string what)
    {
        if (status != 200)
        {
            throw new SoakException($"{what} returned {status}");
        }
        if (!body.StartsWith("Hello, World!", StringComparison.Ordinal)
            || (_options.RequireIoUring && !body.Contains(HelloMarker, StringComparison.Ordinal)))
        {
            throw new SoakException($"{what} was not served over io_uring: '{body.Trim()}'");
        }
    }

    /// <summary>Sizes from 0 to max: a third uniform (many large bodies), two thirds log-uniform (many small ones), and the edges.</summary>
    private static int PickSize(Random rnd, int max)
    {
        double r = rnd.NextDouble();
        if (r < 0.03) return 0;
        if (r < 0.06) return max;
        if (r < 0.36) return rnd.Next(0, max + 1);
        return (int)Math.Min(max, Math.Exp(rnd.NextDouble() * Math.Log(max + 1.0)) - 1);
    }

    // ---- keep-alive ----------------------------------------------------------------------------------------------

    public async Task KeepAliveAsync(Random rnd, CancellationToken ct)
    {
        using HttpResponseMessage response = await _keepAliveClient.GetAsync(_root, ct);
        string body = await response.Content.ReadAsStringAsync(ct);
        CheckHello((int)response.StatusCode, body, "keep-alive GET /");
        _stats.Succeeded(Workload.KeepAlive, body.Length);
    }

    // ---- connection churn ----------------------------------------------------------------------------------------

    public async Task ChurnAsync(Random rnd, CancellationToken ct)
    {
        using RawConnection c = await RawConnection.ConnectAsync(_endPoint, ct);
        await c.SendAsync($"GET / HTTP/1.1\r\nHost: {_host}\r\nConnection: close\r\n\r\n", ct);
        ResponseHead head = await c.ReadHeadAsync(ct);
        using var body = new MemoryStream();
        await c.ReadBodyAsync(head, m => body.Write(m.Span), ct);
        CheckHello(head.Status, Encoding.UTF8.GetString(body.GetBuffer(), 0, (int)body.Length), "churn GET /");
        if (!head.ConnectionClose)
        {
            throw new SoakException("churn GET / with Connection: close got no Connection: close in the response");
        }
        if (!await c.AtEndOfStreamAsync(ct))
        {
            throw new SoakException("churn GET /: bytes after the response instead of the server's FIN");
        }
        _stats.Succeeded(Workload.Churn, body.Length);
    }

    // ---- uploads -------------------------------------------------------------------------------------------------

    public async Task UploadAsync(Random rnd, CancellationToken ct)
    {
        int size = PickSize(rnd, _options.MaxUploadBytes);
        ReadOnlyMemory<byte> data = _randomPool.AsMemory(rnd.Next(0, _randomPool.Length - size + 1), size);
        byte[] expected = SHA256.HashData(data.Span);
        bool chunked = rnd.Next(2) == 0;

        using var request = new HttpRequestMessage(HttpMethod.Post, _echo)
        {
            Content = chunked ? new PiecewiseContent(data, rnd.Next()) : new ReadOnlyMemoryContent(data),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        string what = $"POST /echo {size} B {(chunked ? "chunked" : "Content-Length")}";

        using HttpResponseMessage response = await _uploadClient.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new SoakException($"{what} returned {(int)response.StatusCode}");
        }
        await using Stream stream = await response.Content.ReadAsStreamAsync(ct);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        long total = 0;
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer, ct)) > 0)
            {
                hash.AppendData(buffer, 0, n);
                total += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (total != size)
        {
            throw new SoakException($"{what}: echoed {total} B");
        }
        if (!hash.GetHashAndReset().AsSpan().SequenceEqual(expected))
        {
            throw new SoakException($"{what}: SHA-256 of the echo differs from the upload's");
        }
        _stats.Succeeded(Workload.Upload, 2L * size);
    }

    /// <summary>A body without a length (so HttpClient sends it chunked), written in pieces of random sizes.</summary>
    private sealed class PiecewiseContent(ReadOnlyMemory<byte> data, int seed) : HttpContent
    {
        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            var rnd = new Random(seed);
            int offset = 0;
            while (offset < data.Length)
            {
                int piece = Math.Min(data.Length - offset, PickSize(rnd, 256 * 1024) + 1);
                await stream.WriteAsync(data.Slice(offset, piece), cancellationToken);
                offset += piece;
            }
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }

    // ---- WebSockets ----------------------------------------------------------------------------------------------

    public async Task WebSocketAsync(Random rnd, CancellationToken ct)
    {
        using var ws = new ClientWebSocket();
        ws.Options.HttpVersion = HttpVersion.Version11;
        ws.Options.HttpVersionPolicy = HttpVersionPolicy.RequestVersionExact;
        ws.Options.Proxy = null;
        await ws.ConnectAsync(_ws, ct);

        byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            int messages = rnd.Next(1, 33);
            for (int m = 0; m < messages; m++)
            {
                bool text = rnd.Next(5) == 0;
                int size = PickSize(rnd, _options.MaxWebSocketMessageBytes);
                byte[] pool = text ? _asciiPool : _randomPool;
                ReadOnlyMemory<byte> message = pool.AsMemory(rnd.Next(0, pool.Length - size + 1), size);
                WebSocketMessageType type = text ? WebSocketMessageType.Text : WebSocketMessageType.Binary;

                // Receive while sending: the server echoes each 64 KiB it reads, so a large message is full duplex.
                Task<(long Length, byte[] Hash, WebSocketMessageType Type)> echo = ReceiveMessageAsync(ws, buffer, size, ct);
                int fragments = size == 0 ? 1 : rnd.Next(1, 5);
                int sent = 0;
                for (int f = 1; f <= fragments; f++)
                {
                    int end = f == fragments ? size : rnd.Next(sent, size + 1);
                    await ws.SendAsync(message[sent..end], type, endOfMessage: f == fragments, ct);
                    sent = end;
                }
                var (length, hash, echoedType) = await echo;
                if (length != size || echoedType != type || !hash.AsSpan().SequenceEqual(SHA256.HashData(message.Span)))
                {
                    throw new SoakException($"WebSocket {type} message of {size} B in {fragments} fragment(s) echoed as {echoedType}, {length} B, hash {(length == size ? "different" : "n/a")}");
                }
                _stats.WebSocketMessage(2L * size);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        await ws.CloseAsync(WebSocketCloseStatus.NormalClosure, "soak done", ct);
        if (ws.State != WebSocketState.Closed || ws.CloseStatus != WebSocketCloseStatus.NormalClosure)
        {
            throw new SoakException($"WebSocket close ended in state {ws.State}, status {ws.CloseStatus}");
        }
        _stats.Succeeded(Workload.WebSocket, 0);
    }

    private static async Task<(long Length, byte[] Hash, WebSocketMessageType Type)> ReceiveMessageAsync(
        ClientWebSocket ws, byte[] buffer, int expected, CancellationToken ct)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        WebSocketMessageType? type = null;
        while (true)
        {
            ValueWebSocketReceiveResult r = await ws.ReceiveAsync(buffer.AsMemory(), ct);
            if (r.MessageType == WebSocketMessageType.Close)
            {
                throw new SoakException($"server closed the WebSocket mid-session ({ws.CloseStatus} '{ws.CloseStatusDescription}')");
            }
            if (type is not null && type != r.MessageType)
            {
                throw new SoakException($"WebSocket message changed type from {type} to {r.MessageType} mid-message");
            }
            type = r.MessageType;
            hash.AppendData(buffer, 0, r.Count);
            total += r.Count;
            if (total > expected)
            {
                throw new SoakException($"WebSocket echo longer than the {expected} B sent");
            }
            if (r.EndOfMessage)
            {
                return (total, hash.GetHashAndReset(), type.Value);
            }
        }
    }

    // ---- resets --------------------------------------------------------------------------------------------------

    private static readonly string[] ResetKinds =
    [
        "after-connect",      // RST before any byte
        "mid-headers",        // part of a request head
        "mid-request-body",   // POST /echo with part of its body sent
        "mid-response",       // POST /echo fully sent, part of the echo read
        "idle-keep-alive",    // after a complete GET /, on the idle kept-alive connection
        "mid-websocket",      // WebSocket open, one message echoed, the next one half sent
    ];

    public async Task ResetAsync(Random rnd, CancellationToken ct)
    {
        string kind = ResetKinds[rnd.Next(ResetKinds.Length)];
        using RawConnection c = await RawConnection.ConnectAsync(_endPoint, ct);
        switch (kind)
        {
            case "after-connect":
                break;

            case "mid-headers":
            {
                string head = $"POST /echo HTTP/1.1\r\nHost: {_host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\nX-Soak: ";
                await c.SendAsync(head[..rnd.Next(1, head.Length)], ct);
                await Task.Delay(rnd.Next(0, 20), ct);
                break;
            }

            case "mid-request-body":
            {
                int size = rnd.Next(64 * 1024, _options.MaxUploadBytes + 1);
                await c.SendAsync($"POST /echo HTTP/1.1\r\nHost: {_host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n", ct);
                // Small prefixes all at once; larger ones leave the server echoing (nobody reads) until the reset.
                int prefix = rnd.Next(0, Math.Min(size, 512 * 1024));
                await c.SendAsync(_randomPool.AsMemory(0, prefix), ct);
                await Task.Delay(rnd.Next(0, 20), ct);
                break;
            }

            case "mid-response":
            {
                int size = rnd.Next(64 * 1024, _options.MaxUploadBytes + 1);
                await c.SendAsync($"POST /echo HTTP/1.1\r\nHost: {_host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n", ct);
                Task send = SendUntilResetAsync(c, _randomPool.AsMemory(0, size), ct);
                ResponseHead head = await c.ReadHeadAsync(ct);
                if (head.Status != 200)
                {
                    throw new SoakException($"reset mid-response: POST /echo returned {head.Status}");
                }
                long readBeforeReset = rnd.NextInt64(0, size);
                await c.ReadExactAsync(readBeforeReset, null, ct);
                c.Reset();
                await send; // its failure after the reset is expected; before it, not
                _stats.ResetDone(kind);
                return;
            }

            case "idle-keep-alive":
            {
                await c.SendAsync($"GET / HTTP/1.1\r\nHost: {_host}\r\n\r\n", ct);
                ResponseHead head = await c.ReadHeadAsync(ct);
                using var body = new MemoryStream();
                await c.ReadBodyAsync(head, m => body.Write(m.Span), ct);
                CheckHello(head.Status, Encoding.UTF8.GetString(body.GetBuffer(), 0, (int)body.Length), "reset idle-keep-alive GET /");
                await Task.Delay(rnd.Next(0, 50), ct);
                break;
            }

            case "mid-websocket":
                await WebSocketThenResetAsync(c, rnd, ct);
                break;
        }
        c.Reset();
        _stats.ResetDone(kind);
    }

    private static async Task SendUntilResetAsync(RawConnection c, ReadOnlyMemory<byte> body, CancellationToken ct)
    {
        try
        {
            await c.SendAsync(body, ct);
        }
        catch (Exception) when (c.ResetStarted)
        {
            // our own RST aborted the send
        }
    }

    /// <summary>A hand-made WebSocket client: upgrade, one masked message echoed and checked, then half of a large frame.</summary>
    private async Task WebSocketThenResetAsync(RawConnection c, Random rnd, CancellationToken ct)
    {
        byte[] keyBytes = new byte[16];
        rnd.NextBytes(keyBytes);
        string key = Convert.ToBase64String(keyBytes);
        await c.SendAsync($"GET /ws HTTP/1.1\r\nHost: {_host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n", ct);
        ResponseHead head = await c.ReadHeadAsync(ct);
#pragma warning disable CA5350 // SHA-1 is what RFC 6455 prescribes for Sec-WebSocket-Accept
        string accept = Convert.ToBase64String(SHA1.HashData(Encoding.ASCII.GetBytes(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")));
#pragma warning restore CA5350
        if (head.Status != 101 || !head.Headers.TryGetValue("sec-websocket-accept", out string? got) || got != accept)
        {
            throw new SoakException($"raw WebSocket upgrade: {head.StatusLine}, accept '{(head.Headers.TryGetValue("sec-websocket-accept", out string? a) ? a : "")}'");
        }

        byte[] payload = _randomPool.AsSpan(rnd.Next(0, 1024), rnd.Next(1, 4097)).ToArray();
        await c.SendAsync(MaskedFrame(payload, payload.Length, rnd), ct);
        using var echoed = new MemoryStream();
        while (true)
        {
            byte[] frameHead = new byte[2];
            await c.ReadExactAsync(2, m => m.Span.CopyTo(frameHead), ct);
            int opcode = frameHead[0] & 0x0F;
            bool fin = (frameHead[0] & 0x80) != 0;
            if ((frameHead[1] & 0x80) != 0)
            {
                throw new SoakException("raw WebSocket: the server masked a frame");
            }
            long length = frameHead[1] & 0x7F;
            if (length >= 126)
            {
                int extra = length == 126 ? 2 : 8;
                byte[] ext = new byte[extra];
                int at = 0;
                await c.ReadExactAsync(extra, m => { m.Span.CopyTo(ext.AsSpan(at)); at += m.Length; }, ct);
                length = extra == 2 ? BinaryPrimitives.ReadUInt16BigEndian(ext) : (long)BinaryPrimitives.ReadUInt64BigEndian(ext);
            }
            if (opcode is not (0x0 or 0x2) || length > payload.Length - echoed.Length)
            {
                throw new SoakException($"raw WebSocket: unexpected frame opcode {opcode}, {length} B");
            }
            await c.ReadExactAsync(length, m => echoed.Write(m.Span), ct);
            if (fin) break;
        }
        if (!echoed.ToArray().AsSpan().SequenceEqual(payload))
        {
            throw new SoakException($"raw WebSocket: the {payload.Length} B echo differs");
        }

        // A frame announcing up to 1 MiB, cut short by the reset.
        int announced = rnd.Next(1024, _options.MaxWebSocketMessageBytes + 1);
        byte[] partial = _randomPool.AsSpan(0, rnd.Next(0, announced)).ToArray();
        await c.SendAsync(MaskedFrame(partial, announced, rnd), ct);
    }

    /// <summary>A FIN binary frame, client-masked, whose header announces <paramref name="announced"/> bytes (the payload may be shorter).</summary>
    private static byte[] MaskedFrame(byte[] payload, int announced, Random rnd)
    {
        int headLength = announced < 126 ? 2 : announced <= ushort.MaxValue ? 4 : 10;
        byte[] frame = new byte[headLength + 4 + payload.Length];
        frame[0] = 0x82;
        if (announced < 126)
        {
            frame[1] = (byte)(0x80 | announced);
        }
        else if (announced <= ushort.MaxValue)
        {
            frame[1] = 0x80 | 126;
            BinaryPrimitives.WriteUInt16BigEndian(frame.AsSpan(2), (ushort)announced);
        }
        else
        {
            frame[1] = 0x80 | 127;
            BinaryPrimitives.WriteUInt64BigEndian(frame.AsSpan(2), (ulong)announced);
        }
        Span<byte> mask = frame.AsSpan(headLength, 4);
        rnd.NextBytes(mask);
        for (int i = 0; i < payload.Length; i++)
        {
            frame[headLength + 4 + i] = (byte)(payload[i] ^ mask[i & 3]);
        }
        return frame;
    }

    /// <summary>Closes the pooled keep-alive connections (FIN), so the server should drop back to its idle descriptors.</summary>
    public void Dispose()
    {
        _keepAliveClient.Dispose();
        _uploadClient.Dispose();
    }
}
