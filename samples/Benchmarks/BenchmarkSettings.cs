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

    /// <summary>HTTP/1.1 endpoints (--urls).</summary>
    public List<IPEndPoint> EndPoints { get; } = new();

    /// <summary>HTTP/2-only cleartext endpoints (--h2c-urls): h2c with prior knowledge, as h2load speaks it.</summary>
    public List<IPEndPoint> H2cEndPoints { get; } = new();

    /// <summary>TLS endpoints (--tls-urls) offering HTTP/1.1 and HTTP/2 through ALPN; need --cert and --key.</summary>
    public List<IPEndPoint> TlsEndPoints { get; } = new();

    /// <summary>PEM certificate and private key of the TLS endpoints.</summary>
    public string? CertificatePath { get; private set; }
    public string? KeyPath { get; private set; }

    public static BenchmarkSettings Parse(string[] args, out string[] rest)
    {
        var settings = new BenchmarkSettings();
        var others = new List<string>();
        string urls = "http://127.0.0.1:5000";
        string h2cUrls = "";
        string tlsUrls = "";
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
                case "h2c-urls":
                    h2cUrls = Value()!;
                    break;
                case "tls-urls":
                    tlsUrls = Value()!;
                    break;
                case "cert":
                    settings.CertificatePath = Value()!;
                    break;
                case "key":
                    settings.KeyPath = Value()!;
                    break;
                default:
                    others.Add(arg);
                    break;
            }
        }
        AddEndPoints(settings.EndPoints, urls, "http");
        AddEndPoints(settings.H2cEndPoints, h2cUrls, "http");
        AddEndPoints(settings.TlsEndPoints, tlsUrls, "https");
        if (settings.TlsEndPoints.Count > 0 && (settings.CertificatePath is null || settings.KeyPath is null))
        {
            throw new ArgumentException("--tls-urls needs --cert <PEM certificate> and --key <PEM private key>");
        }
        if (settings.Mode == BenchmarkMode.Platform && settings.H2cEndPoints.Count + settings.TlsEndPoints.Count > 0)
        {
            throw new ArgumentException("--h2c-urls and --tls-urls need --mode aspnet (the platform mode speaks HTTP/1.1 only)");
        }
        rest = others.ToArray();
        return settings;
    }

    private static void AddEndPoints(List<IPEndPoint> endPoints, string urls, string scheme)
    {
        foreach (string url in urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            endPoints.Add(ToEndPoint(url, scheme));
        }
    }

    private static IPEndPoint ToEndPoint(string url, string scheme)
    {
        var uri = new Uri(url.Replace("://*", "://0.0.0.0").Replace("://+", "://0.0.0.0"));
        if (uri.Scheme != scheme) throw new ArgumentException($"{url}: expected a {scheme}:// address here");
        IPAddress address = uri.Host switch
        {
            "localhost" => IPAddress.Loopback,
            var h => IPAddress.Parse(h.Trim('[', ']')),
        };
        return new IPEndPoint(address, uri.Port);
    }
}
