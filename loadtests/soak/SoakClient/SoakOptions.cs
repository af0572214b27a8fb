using System.Globalization;

namespace SoakClient;

/// <summary>Command-line options. Every option is "--name value" or "--name=value".</summary>
internal sealed class SoakOptions
{
    public const string Usage = """
        Usage: SoakClient --url http://127.0.0.1:5000 --pid <server pid> [options]

          --url URL                 base URL of the sample app (serves /, /echo, /ws)        [http://127.0.0.1:5000]
          --pid PID                 server process to sample (/proc/PID); without it no fd/RSS checks
          --duration S              seconds of load, warm-up included                        [600]
          --warmup S                the baseline is the first sample at or after S            [20]
          --settle S                the end sample is taken S after the load stopped          [10]
          --interval S              seconds between samples                                  [5]
          --csv PATH                samples, one line per sample                             [soak.csv]
          --summary-json PATH       machine-readable summary (for the report)                [none]
          --keepalive N             workers: keep-alive GET / over one pooled HttpClient      [4]
          --churn N                 workers: one raw connection per GET /, Connection: close  [2]
          --uploads N               workers: POST /echo up to --max-upload, SHA-256 checked   [2]
          --websockets N            workers: /ws sessions, messages up to --max-ws-message    [2]
          --resets N                workers: clients that reset (RST) at random points        [1]
          --max-upload BYTES        largest upload                                           [8388608]
          --max-ws-message BYTES    largest WebSocket message                                [1048576]
          --op-timeout S            an operation slower than this is an unexpected error     [60]
          --require-io-uring B      false: accept responses from the Sockets fall-back too (A/B runs) [true]
          --seed N                  random seed                                              [time-based]
          --rss-tolerance-mb MB     RSS may end above the baseline by max(MB, PCT%)          [30]
          --rss-tolerance-pct PCT                                                            [15]
          --fd-tolerance N          fds may end above the baseline by N                      [10]
          --trend-rss-mb MB         RSS growth over the last half of the load, by a linear
                                    fit with R^2 >= 0.5, above max(MB, 5% of baseline) = leak [16]

        Exit code: 0 all checks passed, 1 a check failed, 2 bad arguments, 3 server not usable.
        """;

    public Uri BaseUrl { get; private set; } = new("http://127.0.0.1:5000/");
    public int? Pid { get; private set; }
    public int DurationSeconds { get; private set; } = 600;
    public int WarmupSeconds { get; private set; } = 20;
    public int SettleSeconds { get; private set; } = 10;
    public int IntervalSeconds { get; private set; } = 5;
    public string CsvPath { get; private set; } = "soak.csv";
    public string? SummaryJsonPath { get; private set; }
    public int KeepAliveWorkers { get; private set; } = 4;
    public int ChurnWorkers { get; private set; } = 2;
    public int UploadWorkers { get; private set; } = 2;
    public int WebSocketWorkers { get; private set; } = 2;
    public int ResetWorkers { get; private set; } = 1;
    public int MaxUploadBytes { get; private set; } = 8 * 1024 * 1024;
    public int MaxWebSocketMessageBytes { get; private set; } = 1024 * 1024;
    public int OperationTimeoutSeconds { get; private set; } = 60;
    public int Seed { get; private set; } = Environment.TickCount;
    public bool RequireIoUring { get; private set; } = true;
    public double RssToleranceMb { get; private set; } = 30;
    public double RssTolerancePercent { get; private set; } = 15;
    public int FdTolerance { get; private set; } = 10;
    public double TrendRssMb { get; private set; } = 16;

    /// <summary>Null with <paramref name="error"/> null means --help.</summary>
    public static SoakOptions? Parse(string[] args, out string? error)
    {
        var o = new SoakOptions();
        error = null;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string? value = null;
            int eq = name.IndexOf('=', StringComparison.Ordinal);
            if (eq > 0)
            {
                value = name[(eq + 1)..];
                name = name[..eq];
            }
            if (name is "-h" or "--help")
            {
                return null;
            }
            if (!name.StartsWith("--", StringComparison.Ordinal))
            {
                error = $"Unexpected argument '{args[i]}'.";
                return null;
            }
            if (value is null)
            {
                if (i + 1 >= args.Length)
                {
                    error = $"{name} needs a value.";
                    return null;
                }
                value = args[++i];
            }

            try
            {
                switch (name)
                {
                    case "--url": o.BaseUrl = new Uri(value.EndsWith('/') ? value : value + "/", UriKind.Absolute); break;
                    case "--pid": o.Pid = Int(value, 1); break;
                    case "--duration": o.DurationSeconds = Int(value, 1); break;
                    case "--warmup": o.WarmupSeconds = Int(value, 0); break;
                    case "--settle": o.SettleSeconds = Int(value, 0); break;
                    case "--interval": o.IntervalSeconds = Int(value, 1); break;
                    case "--csv": o.CsvPath = value; break;
                    case "--summary-json": o.SummaryJsonPath = value; break;
                    case "--keepalive": o.KeepAliveWorkers = Int(value, 0); break;
                    case "--churn": o.ChurnWorkers = Int(value, 0); break;
                    case "--uploads": o.UploadWorkers = Int(value, 0); break;
                    case "--websockets": o.WebSocketWorkers = Int(value, 0); break;
                    case "--resets": o.ResetWorkers = Int(value, 0); break;
                    case "--max-upload": o.MaxUploadBytes = Int(value, 1); break;
                    case "--max-ws-message": o.MaxWebSocketMessageBytes = Int(value, 1); break;
                    case "--op-timeout": o.OperationTimeoutSeconds = Int(value, 1); break;
                    case "--require-io-uring": o.RequireIoUring = bool.Parse(value); break;
                    case "--seed": o.Seed = int.Parse(value, CultureInfo.InvariantCulture); break;
                    case "--rss-tolerance-mb": o.RssToleranceMb = Double(value); break;
                    case "--rss-tolerance-pct": o.RssTolerancePercent = Double(value); break;
                    case "--fd-tolerance": o.FdTolerance = Int(value, 0); break;
                    case "--trend-rss-mb": o.TrendRssMb = Double(value); break;
                    default:
                        error = $"Unknown option {name}.";
                        return null;
                }
            }
            catch (FormatException)
            {
                error = $"{name}: '{value}' is not a valid value.";
                return null;
            }
            catch (OverflowException)
            {
                error = $"{name}: '{value}' is out of range.";
                return null;
            }
        }

        if (o.BaseUrl.Scheme != Uri.UriSchemeHttp)
        {
            error = "--url must be http:// (the raw-socket workloads speak plain HTTP/1.1).";
            return null;
        }
        if (o.DurationSeconds < o.WarmupSeconds + 2 * o.IntervalSeconds)
        {
            error = "--duration must leave at least two sample intervals after the warm-up.";
            return null;
        }
        if (o.KeepAliveWorkers + o.ChurnWorkers + o.UploadWorkers + o.WebSocketWorkers + o.ResetWorkers == 0)
        {
            error = "Every workload has 0 workers.";
            return null;
        }
        return o;
    }

    private static int Int(string value, int min)
    {
        int v = int.Parse(value, NumberStyles.Integer, CultureInfo.InvariantCulture);
        if (v < min)
        {
            throw new OverflowException();
        }
        return v;
    }

    private static double Double(string value)
    {
        double v = double.Parse(value, NumberStyles.Float, CultureInfo.InvariantCulture);
        if (v < 0 || double.IsNaN(v))
        {
            throw new OverflowException();
        }
        return v;
    }
}
