using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Tests.Semantics;

/// <summary>
/// Servers whose connections are handled at the transport level (Kestrel's <c>ListenOptions.Run</c>): the handler writes
/// straight into the transport's output pipe, so a test decides exactly how many flushes, of what size, from which
/// threads reach the send path.
/// </summary>
internal static class SendPathServer
{
    public static Task<IoUringTestServer> StartAsync(SendPathMode mode, Func<ConnectionContext, Task> handler,
        Action<IoUringTransportOptions>? configureTransport = null)
        => IoUringTestServer.StartAsync(
            configureKestrel: o => o.Listen(IPAddress.Loopback, 0, l => l.Run(handler)),
            configureTransport: o =>
            {
                o.SendPath = mode;
                configureTransport?.Invoke(o);
            });

    /// <summary>
    /// Writes <paramref name="length"/> bytes of the pattern stream in flushes of varying size (1 byte to 192 KiB),
    /// every few flushes from another pool thread. Returns when the output says it is done.
    /// </summary>
    public static async Task WritePatternAsync(ConnectionContext connection, long length, ulong seed, int maxWrite = 192 * 1024)
    {
        var output = connection.Transport.Output;
        var random = new Random((int)seed);
        long offset = 0;
        int round = 0;
        while (offset < length)
        {
            int n = (int)Math.Min(length - offset, round % 7 == 0 ? random.Next(1, 64) : random.Next(1, maxWrite));
            Memory<byte> memory = output.GetMemory(n);
            PatternData.Fill(memory.Span[..n], offset, seed);
            output.Advance(n);
            FlushResult result = await output.FlushAsync();
            if (result.IsCompleted || result.IsCanceled)
            {
                return;
            }
            offset += n;
            if (++round % 3 == 0)
            {
                await Task.Yield(); // the next flush comes from another pool thread
            }
        }
    }

    /// <summary>Reads one line from the connection's input (without the newline); null once the input completed first.</summary>
    public static async Task<string?> ReadLineAsync(ConnectionContext connection)
    {
        var input = connection.Transport.Input;
        while (true)
        {
            var read = await input.ReadAsync();
            var text = Encoding.ASCII.GetString(read.Buffer);
            int newline = text.IndexOf('\n');
            if (newline >= 0)
            {
                input.AdvanceTo(read.Buffer.GetPosition(newline + 1));
                return text[..newline];
            }
            if (read.IsCompleted)
            {
                return null;
            }
            input.AdvanceTo(read.Buffer.Start, read.Buffer.End);
        }
    }

    /// <summary>
    /// Reads to the peer's FIN and returns (bytes, SHA-256). A slow reader: a small receive buffer, small reads, and a
    /// pause every <paramref name="pauseEvery"/> bytes, so the server's socket buffer fills (EAGAIN, partial sends).
    /// </summary>
    public static (long Length, string Hash) ReadAndHash(Socket socket, int readSize, long pauseEvery, int pauseMilliseconds)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[readSize];
        long total = 0, nextPause = pauseEvery;
        int n;
        while ((n = socket.Receive(buffer)) > 0)
        {
            hash.AppendData(buffer, 0, n);
            total += n;
            if (total >= nextPause)
            {
                Thread.Sleep(pauseMilliseconds); // being slow is the point here, not synchronisation
                nextPause += pauseEvery;
            }
        }
        return (total, Convert.ToHexString(hash.GetHashAndReset()));
    }

    /// <summary>A client socket with a small receive buffer (set before connecting, so the window stays small).</summary>
    public static Socket ConnectSlowReader(int port, int receiveBufferSize)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = receiveBufferSize, ReceiveTimeout = 60_000 };
        s.Connect(IPAddress.Loopback, port);
        return s;
    }
}

/// <summary>
/// Runs a blocking client on a thread of its own: dozens of clients blocked in Receive on pool threads would starve
/// the very server they test of pool threads.
/// </summary>
internal static class BlockingClient
{
    public static Task<T> Run<T>(Func<T> client) => Task.Factory.StartNew(client, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
}
