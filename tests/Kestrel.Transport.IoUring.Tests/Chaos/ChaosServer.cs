using System.Net;
using System.Security.Cryptography.X509Certificates;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Kestrel.Transport.IoUring.Tests.Protocols;
using Kestrel.Transport.IoUring.Tests.Semantics;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>Starts the server a seed runs against: the chaos endpoints on plaintext and TLS listeners, under the seed's options row.</summary>
internal static class ChaosServer
{
    private static readonly Lazy<X509Certificate2> Certificate = new(TlsTests.CreateSelfSignedCertificate);

    public static async Task<(IoUringTestServer Server, ChaosServerAddresses At)> StartAsync(string transport, ChaosRow row)
    {
        var server = await TransportUnderTest.StartAsync(transport, ChaosEndpoints.Map, options =>
        {
            options.Limits.MaxRequestBodySize = null;
            options.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http1AndHttp2);
            options.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2); // h2c: prior knowledge needs an HTTP/2-only endpoint
            options.Listen(IPAddress.Loopback, 0, l =>
            {
                l.Protocols = HttpProtocols.Http1AndHttp2;
                l.UseHttps(Certificate.Value);
            });
        }, row.Apply);
        var addresses = server.Addresses; // in the order of the Listen calls above
        var at = new ChaosServerAddresses(new Uri(addresses[0]), new Uri(addresses[1]), new Uri(addresses[2]));
        return (server, at);
    }
}
