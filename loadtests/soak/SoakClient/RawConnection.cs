using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace SoakClient;

/// <summary>The head of an HTTP/1.1 response.</summary>
internal sealed record ResponseHead(int Status, string StatusLine, Dictionary<string, string> Headers)
{
    public long? ContentLength =>
        Headers.TryGetValue("content-length", out string? v) ? long.Parse(v, CultureInfo.InvariantCulture) : null;

    public bool Chunked =>
        Headers.TryGetValue("transfer-encoding", out string? v) && v.Contains("chunked", StringComparison.OrdinalIgnoreCase);

    public bool ConnectionClose =>
        Headers.TryGetValue("connection", out string? v) && v.Contains("close", StringComparison.OrdinalIgnoreCase);
}

/// <summary>
/// A raw TCP connection speaking just enough HTTP/1.1 for the churn and reset workloads, so the client controls
/// exactly when the connection opens, what is on the wire, and whether it ends with FIN or RST.
/// </summary>
internal sealed class RawConnection : IDisposable
{
    private const int MaxHeadBytes = 16 * 1024;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawConnection(Socket socket) => Socket = socket;

    public Socket Socket { get; }

    /// <summary>Set just before <see cref="Reset"/>: errors on this connection after it are the reset's own doing.</summary>
    public volatile bool ResetStarted;

    public static async Task<RawConnection> ConnectAsync(EndPoint endPoint, CancellationToken ct)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(endPoint, ct);
            return new RawConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            int n = await Socket.SendAsync(data, SocketFlags.None, ct);
            data = data[n..];
        }
    }

    public ValueTask SendAsync(string ascii, CancellationToken ct) => SendAsync(Encoding.ASCII.GetBytes(ascii), ct);

    /// <summary>Reads more bytes into the buffer; false at end of stream.</summary>
    private async ValueTask<bool> FillAsync(CancellationToken ct)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            throw new SoakException("response line or header too long");
        }
        int n = await Socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, ct);
        _end += n;
        return n > 0;
    }

    private async ValueTask<string> ReadLineAsync(CancellationToken ct)
    {
        int scanned = _start;
        while (true)
        {
            int i = Array.IndexOf(_buffer, (byte)'\n', scanned, _end - scanned);
            if (i >= 0)
            {
                int lineEnd = i > _start && _buffer[i - 1] == '\r' ? i - 1 : i;
                string line = Encoding.ASCII.GetString(_buffer, _start, lineEnd - _start);
                _start = i + 1;
                return line;
            }
            if (_end - _start > MaxHeadBytes)
            {
                throw new SoakException("response line longer than 16 KiB");
            }
            scanned = _end;
            int before = _start;
            if (!await FillAsync(ct))
            {
                throw new SoakException(_end == _start ? "connection closed before a response line" : "connection closed mid-line");
            }
            scanned -= before - _start; // FillAsync compacted the buffer
        }
    }

    public async Task<ResponseHead> ReadHeadAsync(CancellationToken ct)
    {
        string statusLine = await ReadLineAsync(ct);
        string[] parts = statusLine.Split(' ', 3);
        if (parts.Length < 2 || !parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int status))
        {
            throw new SoakException($"malformed status line '{statusLine}'");
        }
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        while (true)
        {
            string line = await ReadLineAsync(ct);
            if (line.Length == 0)
            {
                return new ResponseHead(status, statusLine, headers);
            }
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                throw new SoakException($"malformed header line '{line}'");
            }
            string name = line[..colon].Trim().ToLowerInvariant();
            string value = line[(colon + 1)..].Trim();
            headers[name] = headers.TryGetValue(name, out string? prior) ? prior + ", " + value : value;
        }
    }

    /// <summary>Reads exactly <paramref name="count"/> bytes, handing each piece to <paramref name="sink"/>.</summary>
    public async Task ReadExactAsync(long count, Action<ReadOnlyMemory<byte>>? sink, CancellationToken ct)
    {
        while (count > 0)
        {
            if (_end == _start && !await FillAsync(ct))
            {
                throw new SoakException($"connection closed with {count} body bytes still expected");
            }
            int n = (int)Math.Min(count, _end - _start);
            sink?.Invoke(_buffer.AsMemory(_start, n));
            _start += n;
            count -= n;
        }
    }

    /// <summary>Reads a whole response body as the head describes it (Content-Length, chunked, or until end of stream).</summary>
    public async Task<long> ReadBodyAsync(ResponseHead head, Action<ReadOnlyMemory<byte>>? sink, CancellationToken ct)
    {
        if (head.Chunked)
        {
            long total = 0;
            while (true)
            {
                string sizeLine = await ReadLineAsync(ct);
                int semi = sizeLine.IndexOf(';', StringComparison.Ordinal);
                string hex = (semi >= 0 ? sizeLine[..semi] : sizeLine).Trim();
                if (!long.TryParse(hex, NumberStyles.HexNumber, CultureInfo.InvariantCulture, out long size) || size < 0)
                {
                    throw new SoakException($"malformed chunk size line '{sizeLine}'");
                }
                if (size == 0)
                {
                    while ((await ReadLineAsync(ct)).Length != 0)
                    {
                        // trailers: ignored
                    }
                    return total;
                }
                await ReadExactAsync(size, sink, ct);
                total += size;
                if ((await ReadLineAsync(ct)).Length != 0)
                {
                    throw new SoakException("chunk not followed by CRLF");
                }
            }
        }
        if (head.ContentLength is long length)
        {
            await ReadExactAsync(length, sink, ct);
            return length;
        }
        return await ReadToEndAsync(sink, ct);
    }

    public async Task<long> ReadToEndAsync(Action<ReadOnlyMemory<byte>>? sink, CancellationToken ct)
    {
        long total = 0;
        while (true)
        {
            if (_end > _start)
            {
                sink?.Invoke(_buffer.AsMemory(_start, _end - _start));
                total += _end - _start;
                _start = _end;
            }
            if (!await FillAsync(ct))
            {
                return total;
            }
        }
    }

    /// <summary>True if the peer has closed (FIN) with nothing more to read; waits for it.</summary>
    public async Task<bool> AtEndOfStreamAsync(CancellationToken ct) => _end == _start && !await FillAsync(ct);

    /// <summary>SO_LINGER {on, 0} then close: the kernel sends RST instead of FIN and drops unsent data.</summary>
    public void Reset()
    {
        ResetStarted = true;
        Socket.LingerState = new LingerOption(true, 0);
        Socket.Close();
    }

    public void Dispose() => Socket.Dispose();
}
