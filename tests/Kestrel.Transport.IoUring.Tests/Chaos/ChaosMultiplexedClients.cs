using System.Net;
using System.Net.WebSockets;
using Kestrel.Transport.IoUring.Tests.Protocols;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>The clients that go through .NET's own stacks: HTTP/2 streams (some reset), TLS, WebSocket echo.</summary>
internal static class ChaosMultiplexedClients
{
    private static HttpClient CreateClient(Uri baseAddress, Version version)
    {
        var handler = new SocketsHttpHandler
        {
            // The server's certificate is self-signed, made for this run.
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        };
        return new HttpClient(handler)
        {
            BaseAddress = baseAddress,
            DefaultRequestVersion = version,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeout.InfiniteTimeSpan, // the run's deadline applies instead
        };
    }

    private static string DataPath(ClientPlan p, long size, ulong seed) => $"/data?mode={p.Handler}&n={size}&seed={seed}";

    /// <summary>
    /// Count concurrent HTTP/2 streams on one connection; every third is cancelled after its first bytes (RST_STREAM),
    /// the others must arrive whole.
    /// </summary>
    public static async Task Http2Async(Uri baseAddress, ClientPlan p, CancellationToken ct)
    {
        using var client = CreateClient(baseAddress, HttpVersion.Version20);
        await Task.WhenAll(Enumerable.Range(0, p.Count).Select(i => StreamAsync(client, p, p.Size + i, p.DataSeed + (ulong)i, cancelEarly: i % 3 == 2, ct)));
    }

    /// <summary>Over TLS: a download and an upload, on HTTP/1.1 or HTTP/2 (by the plan's count).</summary>
    public static async Task TlsAsync(Uri baseAddress, ClientPlan p, CancellationToken ct)
    {
        using var client = CreateClient(baseAddress, p.Count % 2 == 0 ? HttpVersion.Version20 : HttpVersion.Version11);
        await StreamAsync(client, p, p.Size, p.DataSeed, cancelEarly: false, ct);
        using var response = await client.PostAsync("/upload", new PatternContent(p.Size, p.DataSeed), ct);
        string body = await response.Content.ReadAsStringAsync(ct);
        string expected = $"{PatternData.Sha256(p.Size, p.DataSeed)} {p.Size}";
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new UnexpectedResponseException($"TLS upload status {(int)response.StatusCode}");
        }
        if (body != expected)
        {
            throw new CorruptionException($"client {p.Id} TLS upload: the server hashed '{body}', the client sent '{expected}'");
        }
    }

    private static async Task StreamAsync(HttpClient client, ClientPlan p, long size, ulong seed, bool cancelEarly, CancellationToken ct)
    {
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        using var response = await client.GetAsync(DataPath(p, size, seed), HttpCompletionOption.ResponseHeadersRead, cancel.Token);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new UnexpectedResponseException($"status {(int)response.StatusCode}");
        }
        var verifier = new PatternVerifier(seed, size, $"client {p.Id} stream");
        await using var body = await response.Content.ReadAsStreamAsync(cancel.Token);
        var buffer = new byte[16 * 1024];
        int n;
        while ((n = await body.ReadAsync(buffer, cancel.Token)) > 0)
        {
            verifier.Append(buffer.AsSpan(0, n));
            if (cancelEarly)
            {
                return; // disposing the unread response resets the stream
            }
        }
        verifier.EnsureComplete();
    }

    /// <summary>Count messages of varied sizes, each echoed back whole and in order, then a close handshake.</summary>
    public static async Task WebSocketAsync(Uri baseAddress, ClientPlan p, CancellationToken ct)
    {
        using var socket = new ClientWebSocket();
        await socket.ConnectAsync(new Uri($"ws://{baseAddress.Authority}/ws"), ct);
        var receive = new byte[64 * 1024];
        for (int i = 0; i < p.Count; i++)
        {
            int size = (int)((p.Size + i * 977) % (256 * 1024)) + 1;
            var message = new byte[size];
            PatternData.Fill(message, 0, p.DataSeed + (ulong)i);
            await socket.SendAsync(message, WebSocketMessageType.Binary, endOfMessage: true, ct);
            var verifier = new PatternVerifier(p.DataSeed + (ulong)i, size, $"client {p.Id} echo {i}");
            ValueWebSocketReceiveResult result;
            do
            {
                result = await socket.ReceiveAsync(receive.AsMemory(), ct);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    throw new EndOfStreamException("the server closed the WebSocket mid-echo");
                }
                verifier.Append(receive.AsSpan(0, result.Count));
            }
            while (!result.EndOfMessage);
            verifier.EnsureComplete();
        }
        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, null, ct);
    }
}
