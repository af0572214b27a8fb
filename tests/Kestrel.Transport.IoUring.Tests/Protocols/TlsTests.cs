using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

public sealed class TlsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    /// <summary>A self-signed server certificate for localhost/127.0.0.1, round-tripped through PFX so Kestrel can use its key.</summary>
    internal static X509Certificate2 CreateSelfSignedCertificate()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // serverAuth
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        byte[] pfx = certificate.Export(X509ContentType.Pfx, "test");
        return X509CertificateLoader.LoadPkcs12(pfx, "test", X509KeyStorageFlags.Exportable);
    }

    private static async Task<(IoUringTestServer Server, X509Certificate2 Certificate)> StartHttpsServerAsync()
    {
        var certificate = CreateSelfSignedCertificate();
        var server = await IoUringTestServer.StartAsync(
            configureApp: app =>
            {
                app.MapGet("/", (HttpContext c) =>
                {
                    var tls = c.Features.Get<ITlsHandshakeFeature>();
                    var ring = c.Features.Get<IIoUringConnectionFeature>();
                    return $"{c.Request.Protocol} https={c.Request.IsHttps} tls={tls?.Protocol} ring={(ring is null ? "none" : "yes")}";
                });
                app.MapPost("/len", async (HttpContext c) =>
                {
                    var (hash, length) = await ProtocolEndpoints.HashBodyAsync(c.Request.Body);
                    return $"{length}:{hash}";
                });
            },
            configureKestrel: o => o.Listen(IPAddress.Loopback, 0, l =>
            {
                l.Protocols = HttpProtocols.Http1AndHttp2;
                l.UseHttps(new HttpsConnectionAdapterOptions { ServerCertificate = certificate });
            }));
        return (server, certificate);
    }

    private static HttpClient CreateClient(IoUringTestServer server, X509Certificate2 expected, Version version)
    {
        var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                // Trust exactly our certificate, nothing else.
                RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null && cert.GetCertHashString() == expected.Thumbprint,
            },
        };
        return new HttpClient(handler)
        {
            BaseAddress = new Uri($"https://127.0.0.1:{server.Port}/"),
            DefaultRequestVersion = version,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Timeout = Timeout,
        };
    }

    [Fact]
    public async Task Https_Http11_OverTls()
    {
        var (server, certificate) = await StartHttpsServerAsync();
        await using var _ = server;
        using var __ = certificate;
        Assert.StartsWith("https://", server.Addresses[0]);

        using var client = CreateClient(server, certificate, HttpVersion.Version11);
        for (int i = 0; i < 5; i++)
        {
            using var response = await client.GetAsync("/");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal(HttpVersion.Version11, response.Version);
            string body = await response.Content.ReadAsStringAsync();
            Assert.StartsWith("HTTP/1.1 https=True tls=Tls1", body);
            Assert.EndsWith("ring=yes", body);
        }

        const long size = 4 * 1024 * 1024 + 7;
        using var post = await client.PostAsync("/len", new PatternContent(size));
        Assert.Equal($"{size}:{PatternData.Sha256(size)}", await post.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Https_Http2_NegotiatedByAlpn()
    {
        var (server, certificate) = await StartHttpsServerAsync();
        await using var _ = server;
        using var __ = certificate;

        using var client = CreateClient(server, certificate, HttpVersion.Version20);
        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => client.GetAsync("/"))).WaitAsync(Timeout);
        foreach (var response in responses)
        {
            using (response)
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                Assert.Equal(HttpVersion.Version20, response.Version);
                string body = await response.Content.ReadAsStringAsync();
                Assert.StartsWith("HTTP/2 https=True tls=Tls1", body);
                Assert.EndsWith("ring=yes", body);
            }
        }

        const long size = 4 * 1024 * 1024 + 7;
        using var post = await client.PostAsync("/len", new PatternContent(size));
        Assert.Equal(HttpVersion.Version20, post.Version);
        Assert.Equal($"{size}:{PatternData.Sha256(size)}", await post.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Https_UntrustedClientHandshakeFailure_DoesNotHurtServer()
    {
        var (server, certificate) = await StartHttpsServerAsync();
        await using var _ = server;
        using var __ = certificate;

        // A client that rejects the certificate aborts the handshake; the server must keep serving others.
        using (var strict = new HttpClient { BaseAddress = new Uri($"https://127.0.0.1:{server.Port}/"), Timeout = Timeout })
        {
            await Assert.ThrowsAsync<HttpRequestException>(() => strict.GetAsync("/"));
        }
        using var client = CreateClient(server, certificate, HttpVersion.Version20);
        using var response = await client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [RequiresToolFact("curl")]
    public async Task Curl_Http2_OverTls()
    {
        var (server, certificate) = await StartHttpsServerAsync();
        await using var _ = server;
        using var __ = certificate;

        var (exit, stdout, stderr) = await ExternalTool.RunAsync("curl",
            ["-sS", "-k", "--http2", "-o", "-", "-w", "\n%{http_code} %{http_version}", $"https://127.0.0.1:{server.Port}/"], Timeout);
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, exit);
        var lines = stdout.Trim().Split('\n');
        Assert.StartsWith("HTTP/2 https=True", lines[0]);
        Assert.EndsWith("ring=yes", lines[0]);
        Assert.Equal("200 2", lines[^1]);
    }
}
