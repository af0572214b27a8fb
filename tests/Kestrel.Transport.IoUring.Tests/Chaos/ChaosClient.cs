using System.Diagnostics;
using System.Net.Sockets;
using System.Net.WebSockets;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

/// <summary>How a client's connection(s) ended.</summary>
internal enum ClientOutcome
{
    /// <summary>Everything sent arrived whole and in order.</summary>
    Complete,

    /// <summary>The connection ended early (reset, or closed mid-response); every byte that did arrive was right.</summary>
    EndedEarly,

    /// <summary>Bytes arrived that were not sent, or in the wrong order: always a failure.</summary>
    Corrupted,

    /// <summary>The client was still waiting at its deadline: always a failure.</summary>
    Hung,

    /// <summary>An answer its plan does not allow (a wrong status, an unexpected exception).</summary>
    Unexpected,
}

internal sealed record ClientResult(ClientPlan Plan, ClientOutcome Outcome, string Detail, TimeSpan Elapsed)
{
    /// <summary>
    /// Whether this ending is acceptable. Corruption and hangs never are. Ending early is, when the client resets by
    /// itself, when its handler throws or aborts, or when the seed injects faults that end connections (a fault cannot
    /// be pinned to one connection, so any may be the one it hit). Otherwise the client must complete.
    /// </summary>
    public bool Acceptable(FaultPlan faults) => Outcome switch
    {
        ClientOutcome.Complete => true,
        ClientOutcome.EndedEarly => Plan.ClientResets || Plan.HandlerCutsShort || faults.EndsConnections,
        ClientOutcome.Unexpected => Plan.HandlerCutsShort, // e.g. a 500 where the throw came before the response started
        _ => false,
    };
}

/// <summary>Runs one client plan against a server, within a deadline, and classifies how it ended.</summary>
internal static class ChaosClient
{
    public static async Task<ClientResult> RunAsync(ClientPlan p, ChaosServerAddresses at, TimeSpan deadline)
    {
        var clock = Stopwatch.StartNew();
        using var timeout = new CancellationTokenSource(deadline);
        var run = RunKindAsync(p, at, timeout.Token);
        try
        {
            // A client that ignores its token still cannot hold the run: past the deadline plus a grace it is hung.
            await run.WaitAsync(deadline + TimeSpan.FromSeconds(5));
            return new(p, ClientOutcome.Complete, "", clock.Elapsed);
        }
        catch (Exception e)
        {
            var outcome = Classify(e, timeout.IsCancellationRequested);
            _ = run.ContinueWith(t => t.Exception, TaskContinuationOptions.OnlyOnFaulted); // observed, whenever it ends
            return new(p, outcome, $"{e.GetType().Name}: {e.Message}", clock.Elapsed);
        }
    }

    private static ClientOutcome Classify(Exception e, bool pastDeadline) => e switch
    {
        CorruptionException => ClientOutcome.Corrupted,
        TimeoutException => ClientOutcome.Hung,
        OperationCanceledException when pastDeadline => ClientOutcome.Hung,
        _ when pastDeadline => ClientOutcome.Hung,
        UnexpectedResponseException => ClientOutcome.Unexpected,
        IOException or SocketException or EndOfStreamException or WebSocketException or HttpRequestException => ClientOutcome.EndedEarly,
        _ => ClientOutcome.Unexpected,
    };

    private static Task RunKindAsync(ClientPlan p, ChaosServerAddresses at, CancellationToken ct) => p.Kind switch
    {
        ClientKind.KeepAlive => ChaosHttp1Clients.KeepAliveAsync(at.Port, p, ct),
        ClientKind.Pipelined => ChaosHttp1Clients.PipelinedAsync(at.Port, p, ct),
        ClientKind.Download => ChaosHttp1Clients.DownloadAsync(at.Port, p, ct, slowReader: false),
        ClientKind.SlowReader => ChaosHttp1Clients.DownloadAsync(at.Port, p, ct, slowReader: true),
        ClientKind.Upload => ChaosHttp1Clients.UploadAsync(at.Port, p, ct),
        ClientKind.Slowloris => ChaosHttp1Clients.SlowlorisAsync(at.Port, p, ct),
        ClientKind.RstMidRequest => ChaosHttp1Clients.ResetMidRequestAsync(at.Port, p, ct),
        ClientKind.RstMidResponse => ChaosHttp1Clients.ResetMidResponseAsync(at.Port, p, ct),
        ClientKind.HalfClose => ChaosHttp1Clients.HalfCloseAsync(at.Port, p, ct),
        ClientKind.Churn => ChaosHttp1Clients.ChurnAsync(at.Port, p, ct),
        ClientKind.Http2 => ChaosMultiplexedClients.Http2Async(at.Http2Cleartext, p, ct),
        ClientKind.Tls => ChaosMultiplexedClients.TlsAsync(at.Tls, p, ct),
        ClientKind.WebSocket => ChaosMultiplexedClients.WebSocketAsync(at.Plain, p, ct),
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };
}

/// <summary>Where the server under test listens: plaintext HTTP/1.1 (and WebSockets), h2c, and TLS (HTTP/1.1 and HTTP/2).</summary>
internal sealed record ChaosServerAddresses(Uri Plain, Uri Http2Cleartext, Uri Tls)
{
    public int Port => Plain.Port;
}
