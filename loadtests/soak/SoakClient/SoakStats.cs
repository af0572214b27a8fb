using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Text;

namespace SoakClient;

internal enum Workload
{
    KeepAlive,
    Churn,
    Upload,
    WebSocket,
    Reset,
}

/// <summary>A check the client made failed (wrong status, wrong bytes, wrong hash...): always an unexpected error.</summary>
internal sealed class SoakException(string message) : Exception(message);

/// <summary>Counters shared by every worker. Interlocked only: no locks on the hot path.</summary>
internal sealed class SoakStats
{
    public const int MaxErrorSamples = 50;

    private readonly long[] _ok = new long[5];
    private readonly long[] _errors = new long[5];
    private readonly long[] _bytes = new long[5];
    private long _webSocketMessages;
    private long _resets;
    private readonly ConcurrentDictionary<string, long> _resetKinds = new();
    private readonly ConcurrentDictionary<string, long> _errorKinds = new();
    private readonly ConcurrentQueue<string> _errorSamples = new();
    private int _errorSampleCount;
    private readonly Func<double> _clock;

    public SoakStats(Func<double> clock) => _clock = clock;

    public long Ok(Workload w) => Interlocked.Read(ref _ok[(int)w]);
    public long Errors(Workload w) => Interlocked.Read(ref _errors[(int)w]);
    public long Bytes(Workload w) => Interlocked.Read(ref _bytes[(int)w]);
    public long WebSocketMessages => Interlocked.Read(ref _webSocketMessages);
    public long Resets => Interlocked.Read(ref _resets);

    public long UnexpectedErrors
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _errors.Length; i++) sum += Interlocked.Read(ref _errors[i]);
            return sum;
        }
    }

    /// <summary>HTTP exchanges that completed and checked out: keep-alive GETs, churn GETs, uploads, WebSocket sessions.</summary>
    public long Requests => Ok(Workload.KeepAlive) + Ok(Workload.Churn) + Ok(Workload.Upload) + Ok(Workload.WebSocket);

    public IReadOnlyDictionary<string, long> ResetKinds => _resetKinds;
    public IReadOnlyDictionary<string, long> ErrorKinds => _errorKinds;
    public IReadOnlyCollection<string> ErrorSamples => _errorSamples;

    public void Succeeded(Workload w, long bytes)
    {
        Interlocked.Increment(ref _ok[(int)w]);
        if (bytes != 0) Interlocked.Add(ref _bytes[(int)w], bytes);
    }

    public void WebSocketMessage(long bytes)
    {
        Interlocked.Increment(ref _webSocketMessages);
        Interlocked.Add(ref _bytes[(int)Workload.WebSocket], bytes);
    }

    /// <summary>A reset the client made on purpose: expected, counted apart from the errors.</summary>
    public void ResetDone(string kind)
    {
        Interlocked.Increment(ref _resets);
        _resetKinds.AddOrUpdate(kind, 1, static (_, n) => n + 1);
        Interlocked.Increment(ref _ok[(int)Workload.Reset]);
    }

    public void Unexpected(Workload w, string phase, Exception e, bool timedOut)
    {
        Interlocked.Increment(ref _errors[(int)w]);
        string chain = timedOut ? $"timed out: {Describe(e)}" : Describe(e);
        _errorKinds.AddOrUpdate($"{w}: {Shorten(chain, 200)}", 1, static (_, n) => n + 1);
        if (Interlocked.Increment(ref _errorSampleCount) <= MaxErrorSamples)
        {
            string line = $"t={_clock():F1}s ({phase}) {w}: {chain}";
            _errorSamples.Enqueue(line);
            Console.Error.WriteLine("UNEXPECTED " + line);
        }
    }

    /// <summary>The exception chain on one line: type, socket error and message of each level.</summary>
    public static string Describe(Exception e)
    {
        var sb = new StringBuilder();
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            if (sb.Length > 0) sb.Append(" -> ");
            sb.Append(x.GetType().Name);
            if (x is SocketException se) sb.Append('(').Append(se.SocketErrorCode).Append(')');
            sb.Append(": ").Append(x.Message.ReplaceLineEndings(" "));
        }
        return sb.ToString();
    }

    private static string Shorten(string s, int max) => s.Length <= max ? s : s[..max] + "...";
}
