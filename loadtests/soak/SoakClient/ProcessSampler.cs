using System.Globalization;

namespace SoakClient;

/// <summary>One reading of the server process, from /proc only (no dotnet-counters, no EventPipe).</summary>
internal sealed record ProcessSample(
    double Time,
    string Phase,
    long RssKb,
    long RssAnonKb,
    long VmPinKb,
    long VmLckKb,
    int Threads,
    int Fds,
    int ServerConnections,
    int ServerCloseWait,
    long Requests,
    long UnexpectedErrors,
    long Resets,
    long WebSocketMessages,
    long UploadBytes)
{
    public const string CsvHeader =
        "time,rss_kb,fds,requests,unexpected_errors,resets,rss_anon_kb,vm_pin_kb,vm_lck_kb,threads,server_conns,server_close_wait,ws_messages,upload_bytes,phase";

    public string ToCsv() => string.Join(',',
        Time.ToString("F1", CultureInfo.InvariantCulture), RssKb, Fds, Requests, UnexpectedErrors, Resets,
        RssAnonKb, VmPinKb, VmLckKb, Threads, ServerConnections, ServerCloseWait, WebSocketMessages, UploadBytes, Phase);
}

/// <summary>
/// Reads the server's fd count (/proc/PID/fd), memory (/proc/PID/status: VmRSS; RssAnon, i.e. heaps and native
/// memory; VmPin, pages pinned by the kernel, e.g. io_uring registered buffers and zero-copy sends; VmLck) and the
/// TCP sockets on the server's port (/proc/net/tcp). The last catches sockets that live on without a descriptor,
/// e.g. ones held only by an io_uring fixed-file slot, which /proc/PID/fd cannot see.
/// </summary>
internal sealed class ProcessSampler(int pid, int serverPort)
{
    public int Pid { get; } = pid;

    public bool Alive => Directory.Exists($"/proc/{Pid}");

    /// <summary>Null once the process has gone.</summary>
    public ProcessSample? Sample(double time, string phase, SoakStats stats)
    {
        try
        {
            long rss = 0, anon = 0, pin = 0, lck = 0;
            int threads = 0;
            foreach (string line in File.ReadLines($"/proc/{Pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kb(line);
                else if (line.StartsWith("RssAnon:", StringComparison.Ordinal)) anon = Kb(line);
                else if (line.StartsWith("VmPin:", StringComparison.Ordinal)) pin = Kb(line);
                else if (line.StartsWith("VmLck:", StringComparison.Ordinal)) lck = Kb(line);
                else if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = (int)Kb(line);
            }
            int fds = Directory.EnumerateFileSystemEntries($"/proc/{Pid}/fd").Count();
            var (conns, closeWait) = ServerSockets();
            return new ProcessSample(time, phase, rss, anon, pin, lck, threads, fds, conns, closeWait,
                stats.Requests, stats.UnexpectedErrors, stats.Resets, stats.WebSocketMessages, stats.Bytes(Workload.Upload) / 2);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null; // DirectoryNotFoundException/FileNotFoundException: the process has gone
        }
    }

    /// <summary>Descriptors grouped by what they point at ("socket", "anon_inode:[io_uring]", "pipe", "/dev/null"...).</summary>
    public SortedDictionary<string, int> FdKinds()
    {
        var kinds = new SortedDictionary<string, int>(StringComparer.Ordinal);
        try
        {
            foreach (string entry in Directory.EnumerateFileSystemEntries($"/proc/{Pid}/fd"))
            {
                string? target;
                try
                {
                    target = new FileInfo(entry).LinkTarget;
                }
                catch (IOException)
                {
                    continue; // closed meanwhile
                }
                target ??= "?";
                int bracket = target.IndexOf(":[", StringComparison.Ordinal);
                string kind = target.StartsWith("anon_inode:", StringComparison.Ordinal) ? target
                    : bracket > 0 ? target[..bracket] // socket:[123], pipe:[456]
                    : target.StartsWith("/dev/", StringComparison.Ordinal) || target.StartsWith("/proc/", StringComparison.Ordinal) ? target
                    : "file";
                kinds[kind] = kinds.GetValueOrDefault(kind) + 1;
            }
        }
        catch (IOException)
        {
        }
        return kinds;
    }

    /// <summary>Sockets whose local port is the server's, not LISTEN nor TIME_WAIT (those hold no server resources).</summary>
    private (int Connections, int CloseWait) ServerSockets()
    {
        int connections = 0, closeWait = 0;
        foreach (string file in new[] { "/proc/net/tcp", "/proc/net/tcp6" })
        {
            if (!File.Exists(file)) continue;
            bool header = true;
            foreach (string line in File.ReadLines(file))
            {
                if (header)
                {
                    header = false;
                    continue;
                }
                // "  sl  local_address rem_address   st ..."; local_address is HEXIP:HEXPORT
                ReadOnlySpan<char> s = line.AsSpan().TrimStart();
                int f1 = s.IndexOf(' ');
                if (f1 < 0) continue;
                s = s[(f1 + 1)..].TrimStart();
                int f2 = s.IndexOf(' ');
                if (f2 < 0) continue;
                ReadOnlySpan<char> local = s[..f2];
                int colon = local.LastIndexOf(':');
                if (colon < 0 || !int.TryParse(local[(colon + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out int port) || port != serverPort)
                {
                    continue;
                }
                s = s[(f2 + 1)..].TrimStart();
                int f3 = s.IndexOf(' ');
                if (f3 < 0) continue;
                s = s[(f3 + 1)..].TrimStart();
                ReadOnlySpan<char> state = s[..2];
                if (state is "0A" or "06") continue; // LISTEN, TIME_WAIT
                connections++;
                if (state is "08") closeWait++;
            }
        }
        return (connections, closeWait);
    }

    private static long Kb(string line)
    {
        ReadOnlySpan<char> s = line.AsSpan(line.IndexOf(':', StringComparison.Ordinal) + 1).Trim();
        int space = s.IndexOf(' ');
        if (space > 0) s = s[..space];
        return long.Parse(s, CultureInfo.InvariantCulture);
    }
}
