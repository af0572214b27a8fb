using System.Net;

namespace Benchmarks;

public enum TransportKind { IoUring, Sockets }

public enum BenchmarkMode { AspNet, Platform }

/// <summary>The benchmark's own command-line switches; everything else goes to the host builder.</summary>
public sealed class BenchmarkSettings
{
    public TransportKind Transport { get; private set; } = TransportKind.IoUring;
    public bool Inline { get; private set; }
    public BenchmarkMode Mode { get; private set; } = BenchmarkMode.AspNet;
    public List<IPEndPoint> EndPoints { get; } = new();

    public static BenchmarkSettings Parse(string[] args, out string[] rest)
    {
        var settings = new BenchmarkSettings();
        var others = new List<string>();
        string urls = "http://127.0.0.1:5000";
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? Value()
            {
                int eq = arg.IndexOf('=');
                if (eq >= 0) return arg[(eq + 1)..];
                if (i + 1 >= args.Length) throw new ArgumentException($"{arg} needs a value");
                return args[++i];
            }
            string name = arg.Split('=', 2)[0].TrimStart('-').ToLowerInvariant();
            switch (name)
            {
                case "transport":
                    settings.Transport = Value()!.ToLowerInvariant() switch
                    {
                        "iouring" or "io_uring" => TransportKind.IoUring,
                        "sockets" => TransportKind.Sockets,
                        var v => throw new ArgumentException($"--transport {v}: expected iouring or sockets"),
                    };
                    break;
                case "scheduling":
                    settings.Inline = Value()!.ToLowerInvariant() switch
                    {
                        "inline" => true,
                        "threadpool" => false,
                        var v => throw new ArgumentException($"--scheduling {v}: expected threadpool or inline"),
                    };
                    break;
                case "mode":
                    settings.Mode = Value()!.ToLowerInvariant() switch
                    {
                        "aspnet" => BenchmarkMode.AspNet,
                        "platform" => BenchmarkMode.Platform,
                        var v => throw new ArgumentException($"--mode {v}: expected aspnet or platform"),
                    };
                    break;
                case "urls":
                    urls = Value()!;
                    break;
                default:
                    others.Add(arg);
                    break;
            }
        }
        foreach (string url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            settings.EndPoints.Add(ToEndPoint(url));
        }
        rest = others.ToArray();
        return settings;
    }

    private static IPEndPoint ToEndPoint(string url)
    {
        var uri = new Uri(url.Replace("://*", "://0.0.0.0").Replace("://+", "://0.0.0.0"));
        if (uri.Scheme != "http") throw new ArgumentException($"{url}: only http:// is supported");
        IPAddress address = uri.Host switch
        {
            "localhost" => IPAddress.Loopback,
            var h => IPAddress.Parse(h.Trim('[', ']')),
        };
        return new IPEndPoint(address, uri.Port);
    }
}
