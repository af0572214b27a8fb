using System.Security.Cryptography;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>
/// A gRPC client that is not .NET's: grpcio, gRPC's C core with an HTTP/2 stack, flow control and keep-alive pings of
/// its own, runs grpc_interop_client.py against the grpc-dotnet service of <see cref="GrpcTests"/> over h2c and TLS, in
/// both scheduling modes: unary, both streaming directions, duplex, a status with trailers, a missed deadline and a
/// client cancel.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class GrpcInteropTests(ITestOutputHelper output)
{
    private static readonly string Client = Path.Combine(AppContext.BaseDirectory, "Protocols", "grpc_interop_client.py");

    [GrpcioTheory]
    [MemberData(nameof(GrpcTests.Modes), MemberType = typeof(GrpcTests))]
    public async Task GrpcioClient_CallsEveryKindOfMethod(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcTests.GrpcFixture.StartAsync(scheduling, tls);
        var args = new List<string> { Client, $"127.0.0.1:{fixture.Server.Port}", tls ? "tls" : "h2c" };
        string? caFile = null;
        try
        {
            if (fixture.Certificate is { } certificate)
            {
                caFile = Path.GetTempFileName();
                await File.WriteAllTextAsync(caFile, certificate.ExportCertificatePem());
                args.Add(caFile);
            }
            args.Add(ExpectedDownloadSha256(count: 200, size: 32 * 1024));

            var (exitCode, stdout, stderr) = await ExternalTool.RunAsync(DebianPython.Path, args, TimeSpan.FromSeconds(120));
            output.WriteLine(stdout);
            output.WriteLine(stderr);

            Assert.True(exitCode == 0, $"grpcio client exited with {exitCode}:\n{stdout}\n{stderr}");
            Assert.Contains("ok a call after the errors", stdout);
            Assert.Equal(14, stdout.Split('\n').Count(line => line.StartsWith("ok ", StringComparison.Ordinal)));
        }
        finally
        {
            if (caFile is not null)
            {
                File.Delete(caFile);
            }
        }
    }

    /// <summary>The SHA-256 of the Download stream's messages one after another (message i is pattern seed i).</summary>
    private static string ExpectedDownloadSha256(int count, int size)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var message = new byte[size];
        for (int i = 0; i < count; i++)
        {
            PatternData.Fill(message, 0, (ulong)i);
            hash.AppendData(message);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }
}

/// <summary>A [Theory] that needs grpcio for Debian's Python (python3-grpcio); skipped, saying so, where it cannot be imported.</summary>
public sealed class GrpcioTheoryAttribute : TheoryAttribute
{
    private static readonly string? s_whyNot = DebianPython.WhyNotImportable("grpc", "python3-grpcio");

    public GrpcioTheoryAttribute()
    {
        if (s_whyNot is not null)
        {
            Skip = s_whyNot;
        }
    }
}
