using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>
/// Tests that move a lot of data, open many connections or count descriptors. They run one at a time and never
/// alongside any other test of the assembly (so the 2-core machine is not oversubscribed and the fd count is stable).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HeavyProtocolCollection
{
    public const string Name = "Protocols (heavy, serial)";
}

/// <summary>A [Fact] that is skipped, naming the binary, when an external tool is not on PATH.</summary>
public sealed class RequiresToolFactAttribute : FactAttribute
{
    public RequiresToolFactAttribute(string tool)
    {
        if (ExternalTool.Find(tool) is null)
        {
            Skip = $"'{tool}' is not installed (not found on PATH); this test needs it.";
        }
    }
}

internal static class ExternalTool
{
    public static string? Find(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    /// <summary>Runs a tool to completion (bounded by <paramref name="timeout"/>) and returns its exit code and output.</summary>
    public static async Task<(int ExitCode, string StdOut, string StdErr)> RunAsync(string name, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(Find(name) ?? throw new InvalidOperationException($"{name} not found"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{name} did not finish within {timeout}: {await stdout} {await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}

/// <summary>
/// A deterministic pseudo-random byte stream: byte p is byte (p % 8) of SplitMix64(seed + p / 8), so any chunking of
/// the stream produces the same bytes.
/// </summary>
internal static class PatternData
{
    public const ulong DefaultSeed = 0x1234_5678_9abc_def0;

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Fills <paramref name="destination"/> with the stream's bytes from <paramref name="offset"/>.</summary>
    public static void Fill(Span<byte> destination, long offset, ulong seed = DefaultSeed)
    {
        Span<byte> word = stackalloc byte[8];
        int i = 0;
        while (i < destination.Length)
        {
            long p = offset + i;
            int inWord = (int)(p & 7);
            if (inWord == 0 && destination.Length - i >= 8)
            {
                BinaryPrimitives.WriteUInt64LittleEndian(destination.Slice(i, 8), Mix(seed + (ulong)(p >> 3)));
                i += 8;
                continue;
            }
            BinaryPrimitives.WriteUInt64LittleEndian(word, Mix(seed + (ulong)(p >> 3)));
            int n = Math.Min(8 - inWord, destination.Length - i);
            word.Slice(inWord, n).CopyTo(destination.Slice(i, n));
            i += n;
        }
    }

    /// <summary>The SHA-256 of the first <paramref name="length"/> bytes of the stream.</summary>
    public static string Sha256(long length, ulong seed = DefaultSeed)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[256 * 1024];
        for (long offset = 0; offset < length; offset += buffer.Length)
        {
            int n = (int)Math.Min(buffer.Length, length - offset);
            Fill(buffer.AsSpan(0, n), offset, seed);
            hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}

/// <summary>An HttpContent that streams <see cref="PatternData"/> without buffering it, in chunks of varying size.</summary>
internal sealed class PatternContent(long length, ulong seed = PatternData.DefaultSeed) : HttpContent
{
    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
    {
        var buffer = new byte[64 * 1024];
        long offset = 0;
        int round = 0;
        while (offset < length)
        {
            // Vary the write size so the server sees odd boundaries.
            int n = (int)Math.Min(buffer.Length - (round++ % 7) * 1031, length - offset);
            PatternData.Fill(buffer.AsSpan(0, n), offset, seed);
            await stream.WriteAsync(buffer.AsMemory(0, n));
            offset += n;
        }
    }

    protected override bool TryComputeLength(out long l)
    {
        l = length;
        return true;
    }
}

/// <summary>Minimal HTTP/1.1 over a raw socket: write requests, read Content-Length responses.</summary>
internal sealed class RawHttpConnection : IAsyncDisposable
{
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    private RawHttpConnection(Socket socket)
    {
        Socket = socket;
    }

    public Socket Socket { get; }

    public static async Task<RawHttpConnection> ConnectAsync(int port, CancellationToken cancellationToken = default, int? receiveBufferSize = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBufferSize is int size)
        {
            socket.ReceiveBufferSize = size; // before connect, so the advertised window stays small
        }
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new RawHttpConnection(socket);
    }

    public async Task SendAsync(string text, CancellationToken cancellationToken = default)
        => await SendAsync(Encoding.ASCII.GetBytes(text), cancellationToken);

    public async Task SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        while (!data.IsEmpty)
        {
            int n = await Socket.SendAsync(data, SocketFlags.None, cancellationToken);
            data = data[n..];
        }
    }

    private async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
        }
        if (_end == _buffer.Length)
        {
            throw new InvalidOperationException("Response head larger than the buffer.");
        }
        int n = await Socket.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken);
        _end += n;
        return n > 0;
    }

    /// <summary>Reads a response head: status code and headers (names lower-cased).</summary>
    public async Task<(int Status, Dictionary<string, string> Headers)> ReadHeadAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            int headEnd = _buffer.AsSpan(_start, _end - _start).IndexOf("\r\n\r\n"u8);
            if (headEnd >= 0)
            {
                string head = Encoding.ASCII.GetString(_buffer, _start, headEnd);
                _start += headEnd + 4;
                var lines = head.Split("\r\n");
                var statusParts = lines[0].Split(' ', 3);
                if (statusParts.Length < 2 || !statusParts[0].StartsWith("HTTP/1.", StringComparison.Ordinal))
                {
                    throw new InvalidDataException($"Bad status line: {lines[0]}");
                }
                var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
                foreach (var line in lines.Skip(1))
                {
                    int colon = line.IndexOf(':');
                    headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
                }
                return (int.Parse(statusParts[1]), headers);
            }
            if (!await FillAsync(cancellationToken))
            {
                throw new EndOfStreamException("The connection closed before a complete response head.");
            }
        }
    }

    /// <summary>Reads exactly <paramref name="length"/> body bytes, handing each piece to <paramref name="onData"/>.</summary>
    public async Task ReadBodyAsync(long length, Action<ReadOnlySpan<byte>> onData, CancellationToken cancellationToken = default, Func<Task>? betweenReads = null, int maxRead = int.MaxValue)
    {
        while (length > 0)
        {
            if (_start == _end)
            {
                _start = _end = 0;
                if (betweenReads is not null)
                {
                    await betweenReads();
                }
                int want = (int)Math.Min(Math.Min(_buffer.Length, maxRead), length);
                int n = await Socket.ReceiveAsync(_buffer.AsMemory(0, want), SocketFlags.None, cancellationToken);
                if (n == 0)
                {
                    throw new EndOfStreamException($"The connection closed with {length} body bytes still expected.");
                }
                _end = n;
            }
            int take = (int)Math.Min(_end - _start, length);
            onData(_buffer.AsSpan(_start, take));
            _start += take;
            length -= take;
        }
    }

    /// <summary>Reads a whole Content-Length response; returns status, headers and body as text.</summary>
    public async Task<(int Status, Dictionary<string, string> Headers, string Body)> ReadResponseAsync(CancellationToken cancellationToken = default)
    {
        var (status, headers) = await ReadHeadAsync(cancellationToken);
        if (!headers.TryGetValue("content-length", out var lengthText))
        {
            throw new InvalidDataException("Expected a Content-Length response.");
        }
        var body = new MemoryStream();
        await ReadBodyAsync(long.Parse(lengthText), span => body.Write(span), cancellationToken);
        return (status, headers, Encoding.UTF8.GetString(body.ToArray()));
    }

    /// <summary>True when the peer has closed (a read returns 0) with nothing else buffered.</summary>
    public async Task<bool> ReadsEndOfStreamAsync(CancellationToken cancellationToken = default)
    {
        if (_start != _end)
        {
            return false;
        }
        _start = _end = 0;
        return await Socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, cancellationToken) == 0;
    }

    public ValueTask DisposeAsync()
    {
        Socket.Dispose();
        return ValueTask.CompletedTask;
    }
}

internal static class ProtocolEndpoints
{
    /// <summary>Kestrel options for big bodies: one HTTP/1.1+HTTP/2 endpoint on loopback, no body size limit.</summary>
    public static Action<KestrelServerOptions> LoopbackNoBodyLimit(HttpProtocols protocols = HttpProtocols.Http1AndHttp2) => options =>
    {
        options.Limits.MaxRequestBodySize = null;
        options.Listen(IPAddress.Loopback, 0, l => l.Protocols = protocols);
    };

    /// <summary>Reads a request body to the end, hashing it; returns the hex SHA-256 and the byte count.</summary>
    public static async Task<(string Hash, long Length)> HashBodyAsync(Stream body, int readSize = 64 * 1024, Func<long, Task>? afterRead = null)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[readSize];
        long total = 0;
        int n;
        while ((n = await body.ReadAsync(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            total += n;
            if (afterRead is not null)
            {
                await afterRead(total);
            }
        }
        return (Convert.ToHexString(hash.GetHashAndReset()), total);
    }
}
