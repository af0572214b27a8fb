using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

/// <summary>
/// gRPC, the most common HTTP/2 workload after browsers: the real grpc-dotnet server (Grpc.AspNetCore) on the
/// io_uring transport and the real grpc-dotnet client, over h2c and over TLS with ALPN, in both scheduling modes. The
/// four call types, flow control on long streams, status codes and trailers, deadlines and cancellation (RST_STREAM)
/// with the connection staying usable afterwards.
/// </summary>
[Collection(HeavyProtocolCollection.Name)]
public sealed class GrpcTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    public static TheoryData<ApplicationSchedulingMode, bool> Modes => new()
    {
        { ApplicationSchedulingMode.ThreadPool, false },
        { ApplicationSchedulingMode.ThreadPool, true },
        { ApplicationSchedulingMode.Inline, false },
        { ApplicationSchedulingMode.Inline, true },
    };

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task UnaryCalls_ManyConcurrentOnOneConnection_EchoEveryPayload(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcFixture.StartAsync(scheduling, tls);
        var invoker = fixture.Invoker;

        // Sizes from empty to 1 MiB: single DATA frames, frames split by the 16 KiB frame size and by flow control.
        int[] sizes = [0, 1, 100, 16 * 1024 - 5, 16 * 1024, 100_000, 1024 * 1024];
        var calls = Enumerable.Range(0, 70).Select(async i =>
        {
            var request = Payload(sizes[i % sizes.Length], seed: (ulong)i);
            var reply = await invoker.AsyncUnaryCall(EchoMethods.Echo, null, WithinTimeout(), request);
            Assert.Equal(Convert.ToHexString(SHA256.HashData(request)), Convert.ToHexString(SHA256.HashData(reply)));
        });
        await Task.WhenAll(calls).WaitAsync(Timeout);

        Assert.Equal(1, fixture.Service.ConnectionCount);
        output.WriteLine($"{scheduling}, {(tls ? "TLS" : "h2c")}: 70 unary calls on one connection");
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task ServerStreaming_ReaderPausesMidStream_GetsEveryMessageInOrder(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcFixture.StartAsync(scheduling, tls);
        var invoker = fixture.Invoker;
        const int count = 400;
        const int size = 32 * 1024; // 12.5 MiB in all: past the HTTP/2 flow-control windows and the transport's buffers

        Task serverReachedPause = fixture.Service.DownloadReached(102);
        using var call = invoker.AsyncServerStreamingCall(EchoMethods.Download, null, WithinTimeout(),
            DownloadRequest(count, size));
        int received = 0;
        while (await call.ResponseStream.MoveNext(CancellationToken.None))
        {
            Assert.Equal(Payload(size, seed: (ulong)received), call.ResponseStream.Current);
            if (++received == 100)
            {
                // Stop reading until the server has written past the messages read: what it wrote meanwhile waits in
                // the flow-control windows and the buffers between, and must all come out, in order, once reading
                // resumes. Two messages (64 KiB) ahead is what the smallest stream window lets through; a reader that
                // stopped held the server 30 to 32 messages ahead in four runs and down to under 20 in others (the
                // client sizes its window by the round-trip time it measures), never 100.
                await serverReachedPause.WaitAsync(Timeout);
            }
        }
        Assert.Equal(count, received);
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
        Assert.Equal("400", call.GetTrailers().GetValue("sent"));
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task ClientStreaming_LargeUpload_ArrivesIntact(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcFixture.StartAsync(scheduling, tls);
        var invoker = fixture.Invoker;

        using var call = invoker.AsyncClientStreamingCall(EchoMethods.Upload, null, WithinTimeout());
        using var expected = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        for (int i = 0; i < 400; i++)
        {
            var message = Payload(16 * 1024 + i % 7 * 1031, seed: (ulong)i); // 16–22 KiB, odd sizes: messages span frames
            expected.AppendData(message);
            total += message.Length;
            await call.RequestStream.WriteAsync(message);
        }
        await call.RequestStream.CompleteAsync();
        byte[] reply = await call.ResponseAsync.WaitAsync(Timeout);

        Assert.Equal($"{total}:{Convert.ToHexString(expected.GetHashAndReset())}", System.Text.Encoding.ASCII.GetString(reply));
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task DuplexStreaming_PingPongInLockstep_ThenBothSidesComplete(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcFixture.StartAsync(scheduling, tls);
        var invoker = fixture.Invoker;

        using var call = invoker.AsyncDuplexStreamingCall(EchoMethods.Chat, null, WithinTimeout());
        for (int i = 0; i < 500; i++)
        {
            var ping = Payload(i % 50 * 100, seed: (ulong)i);
            await call.RequestStream.WriteAsync(ping);
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None), $"no answer to message {i}");
            Assert.Equal(ping, call.ResponseStream.Current);
        }
        await call.RequestStream.CompleteAsync();
        Assert.False(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(StatusCode.OK, call.GetStatus().StatusCode);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public async Task ErrorsDeadlinesAndCancellation_EndOnlyTheirCall(ApplicationSchedulingMode scheduling, bool tls)
    {
        await using var fixture = await GrpcFixture.StartAsync(scheduling, tls);
        var invoker = fixture.Invoker;

        // A status with a detail and trailers, from a handler that throws.
        var failed = await Assert.ThrowsAsync<RpcException>(() =>
            invoker.AsyncUnaryCall(EchoMethods.Fail, null, WithinTimeout(), [1]).ResponseAsync);
        Assert.Equal(StatusCode.NotFound, failed.StatusCode);
        Assert.Equal("no such thing", failed.Status.Detail);
        Assert.Equal("yes", failed.Trailers.GetValue("failed-on-purpose"));

        // A deadline the handler does not meet: the client gets DeadlineExceeded and the server's call is cancelled.
        var deadline = await Assert.ThrowsAsync<RpcException>(() =>
            invoker.AsyncUnaryCall(EchoMethods.Hang, null, new CallOptions(deadline: DateTime.UtcNow.AddMilliseconds(300)), [1]).ResponseAsync);
        Assert.Equal(StatusCode.DeadlineExceeded, deadline.StatusCode);
        await fixture.Service.HangCancelled.Task.WaitAsync(Timeout);

        // The client cancels an endless stream midway (RST_STREAM): the server's handler sees its call cancelled.
        using (var cts = new CancellationTokenSource())
        using (var endless = invoker.AsyncServerStreamingCall(EchoMethods.Download, null, new CallOptions(cancellationToken: cts.Token),
                   DownloadRequest(int.MaxValue, 1024)))
        {
            for (int i = 0; i < 50; i++)
            {
                Assert.True(await endless.ResponseStream.MoveNext(CancellationToken.None));
            }
            cts.Cancel();
            var cancelled = await Assert.ThrowsAsync<RpcException>(() => endless.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(StatusCode.Cancelled, cancelled.StatusCode);
        }
        await fixture.Service.DownloadCancelled.Task.WaitAsync(Timeout);

        // None of that ended the connection: the next call goes out on it and succeeds.
        var reply = await invoker.AsyncUnaryCall(EchoMethods.Echo, null, WithinTimeout(), [1, 2, 3]);
        Assert.Equal(new byte[] { 1, 2, 3 }, reply);
        Assert.Equal(1, fixture.Service.ConnectionCount);
    }

    /// <summary>Call options whose deadline bounds the call like the test's other waits.</summary>
    private static CallOptions WithinTimeout() => new(deadline: DateTime.UtcNow + Timeout);

    private static byte[] Payload(int size, ulong seed)
    {
        var bytes = new byte[size];
        PatternData.Fill(bytes, 0, seed);
        return bytes;
    }

    private static byte[] DownloadRequest(int count, int size)
    {
        var request = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(request, count);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(request.AsSpan(4), size);
        return request;
    }

    /// <summary>A server with the echo service and a client channel to it.</summary>
    internal sealed class GrpcFixture : IAsyncDisposable
    {
        private GrpcFixture(IoUringTestServer server, GrpcChannel channel, EchoService service, X509Certificate2? certificate)
        {
            Server = server;
            Channel = channel;
            Service = service;
            Certificate = certificate;
        }

        /// <summary>The server's self-signed certificate over TLS, null over h2c.</summary>
        public X509Certificate2? Certificate { get; }

        public IoUringTestServer Server { get; }

        public GrpcChannel Channel { get; }

        /// <summary>The channel's call invoker: calls by method descriptor, as generated clients make them.</summary>
        public CallInvoker Invoker => Channel.CreateCallInvoker();

        public EchoService Service { get; }

        public static async Task<GrpcFixture> StartAsync(ApplicationSchedulingMode scheduling, bool tls)
        {
            var service = new EchoService();
            X509Certificate2? certificate = tls ? TlsTests.CreateSelfSignedCertificate() : null;
            var server = await IoUringTestServer.StartAsync(
                configureApp: app => app.MapGrpcService<EchoService>(),
                configureKestrel: o => o.Listen(IPAddress.Loopback, 0, l =>
                {
                    if (certificate is not null)
                    {
                        l.Protocols = HttpProtocols.Http1AndHttp2; // HTTP/2 chosen by ALPN
                        l.UseHttps(new HttpsConnectionAdapterOptions { ServerCertificate = certificate });
                    }
                    else
                    {
                        l.Protocols = HttpProtocols.Http2; // h2c: prior knowledge
                    }
                }),
                configureTransport: o => o.ApplicationScheduling = scheduling,
                configureServices: services =>
                {
                    services.AddGrpc();
                    services.AddSingleton(service);
                });

            var handler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false };
            if (certificate is not null)
            {
                string thumbprint = certificate.Thumbprint;
                handler.SslOptions = new SslClientAuthenticationOptions
                {
                    RemoteCertificateValidationCallback = (_, cert, _, _) => cert is not null && cert.GetCertHashString() == thumbprint,
                };
            }
            var channel = GrpcChannel.ForAddress($"{(tls ? "https" : "http")}://127.0.0.1:{server.Port}", new GrpcChannelOptions
            {
                HttpHandler = handler,
                MaxReceiveMessageSize = 2 * 1024 * 1024,
                MaxSendMessageSize = 2 * 1024 * 1024,
            });
            return new GrpcFixture(server, channel, service, certificate);
        }

        public async ValueTask DisposeAsync()
        {
            Channel.Dispose();
            await Server.DisposeAsync();
        }
    }
}

/// <summary>The methods of the test service: byte-array messages, no generated code.</summary>
public static class EchoMethods
{
    private const string ServiceName = "iouring.test.Echo";

    private static readonly Marshaller<byte[]> s_bytes = Marshallers.Create(static b => b, static b => b);

    public static readonly Method<byte[], byte[]> Echo = new(MethodType.Unary, ServiceName, "Echo", s_bytes, s_bytes);
    public static readonly Method<byte[], byte[]> Fail = new(MethodType.Unary, ServiceName, "Fail", s_bytes, s_bytes);
    public static readonly Method<byte[], byte[]> Hang = new(MethodType.Unary, ServiceName, "Hang", s_bytes, s_bytes);
    public static readonly Method<byte[], byte[]> Download = new(MethodType.ServerStreaming, ServiceName, "Download", s_bytes, s_bytes);
    public static readonly Method<byte[], byte[]> Upload = new(MethodType.ClientStreaming, ServiceName, "Upload", s_bytes, s_bytes);
    public static readonly Method<byte[], byte[]> Chat = new(MethodType.DuplexStreaming, ServiceName, "Chat", s_bytes, s_bytes);
}

/// <summary>
/// The test service's binding, written the way generated code writes it: grpc-dotnet binds each gRPC method to the
/// override, on the service class, of the virtual method of this class named like it.
/// </summary>
[BindServiceMethod(typeof(EchoServiceBase), nameof(BindService))]
public abstract class EchoServiceBase
{
    public static void BindService(ServiceBinderBase binder, EchoServiceBase? service)
    {
        binder.AddMethod(EchoMethods.Echo, (UnaryServerMethod<byte[], byte[]>?)null);
        binder.AddMethod(EchoMethods.Fail, (UnaryServerMethod<byte[], byte[]>?)null);
        binder.AddMethod(EchoMethods.Hang, (UnaryServerMethod<byte[], byte[]>?)null);
        binder.AddMethod(EchoMethods.Download, (ServerStreamingServerMethod<byte[], byte[]>?)null);
        binder.AddMethod(EchoMethods.Upload, (ClientStreamingServerMethod<byte[], byte[]>?)null);
        binder.AddMethod(EchoMethods.Chat, (DuplexStreamingServerMethod<byte[], byte[]>?)null);
    }

    public abstract Task<byte[]> Echo(byte[] request, ServerCallContext context);

    public abstract Task<byte[]> Fail(byte[] request, ServerCallContext context);

    public abstract Task<byte[]> Hang(byte[] request, ServerCallContext context);

    public abstract Task Download(byte[] request, IServerStreamWriter<byte[]> responses, ServerCallContext context);

    public abstract Task<byte[]> Upload(IAsyncStreamReader<byte[]> requests, ServerCallContext context);

    public abstract Task Chat(IAsyncStreamReader<byte[]> requests, IServerStreamWriter<byte[]> responses, ServerCallContext context);
}

/// <summary>The test service: echoes, fails, hangs, streams, and notes the connections its calls came on.</summary>
public sealed class EchoService : EchoServiceBase
{
    private readonly HashSet<string> _connections = [];

    /// <summary>Completed when a Hang call's cancellation token fires (its deadline passed).</summary>
    public TaskCompletionSource HangCancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly TaskCompletionSource _downloadMilestoneReached = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile int _downloadMilestone = -1;

    /// <summary>Completes once a Download stream has written <paramref name="messages"/> messages (set it before the call).</summary>
    public Task DownloadReached(int messages)
    {
        _downloadMilestone = messages;
        return _downloadMilestoneReached.Task;
    }

    /// <summary>Completed when a Download stream ends because its call was cancelled.</summary>
    public TaskCompletionSource DownloadCancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>How many distinct connections the calls came on.</summary>
    public int ConnectionCount
    {
        get
        {
            lock (_connections)
            {
                return _connections.Count;
            }
        }
    }

    public override Task<byte[]> Echo(byte[] request, ServerCallContext context)
    {
        Note(context);
        return Task.FromResult(request);
    }

    public override Task<byte[]> Fail(byte[] request, ServerCallContext context)
    {
        Note(context);
        throw new RpcException(new Status(StatusCode.NotFound, "no such thing"), new Metadata { { "failed-on-purpose", "yes" } });
    }

    public override async Task<byte[]> Hang(byte[] request, ServerCallContext context)
    {
        Note(context);
        try
        {
            await Task.Delay(System.Threading.Timeout.Infinite, context.CancellationToken);
        }
        catch (OperationCanceledException)
        {
            HangCancelled.TrySetResult();
            throw;
        }
        return request;
    }

    public override async Task Download(byte[] request, IServerStreamWriter<byte[]> responses, ServerCallContext context)
    {
        Note(context);
        int count = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(request);
        int size = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(request.AsSpan(4));
        try
        {
            for (int i = 0; i < count; i++)
            {
                var message = new byte[size];
                PatternData.Fill(message, 0, (ulong)i);
                await responses.WriteAsync(message, context.CancellationToken);
                if (i + 1 == _downloadMilestone) // volatile: set by the test before the call
                {
                    _downloadMilestoneReached.TrySetResult();
                }
            }
        }
        catch (Exception) when (context.CancellationToken.IsCancellationRequested)
        {
            DownloadCancelled.TrySetResult();
            throw;
        }
        context.ResponseTrailers.Add("sent", count.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    public override async Task<byte[]> Upload(IAsyncStreamReader<byte[]> requests, ServerCallContext context)
    {
        Note(context);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long total = 0;
        while (await requests.MoveNext(context.CancellationToken))
        {
            hash.AppendData(requests.Current);
            total += requests.Current.Length;
        }
        return System.Text.Encoding.ASCII.GetBytes($"{total}:{Convert.ToHexString(hash.GetHashAndReset())}");
    }

    public override async Task Chat(IAsyncStreamReader<byte[]> requests, IServerStreamWriter<byte[]> responses, ServerCallContext context)
    {
        Note(context);
        while (await requests.MoveNext(context.CancellationToken))
        {
            await responses.WriteAsync(requests.Current, context.CancellationToken);
        }
    }

    private void Note(ServerCallContext context)
    {
        var http = context.GetHttpContext();
        Assert.NotNull(http.Features.Get<IIoUringConnectionFeature>()); // served by the io_uring transport
        lock (_connections)
        {
            _connections.Add(http.Connection.Id);
        }
    }
}
