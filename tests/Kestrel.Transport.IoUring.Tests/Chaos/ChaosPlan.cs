using System.Text;

namespace Kestrel.Transport.IoUring.Tests.Chaos;

internal enum ClientKind { KeepAlive, Pipelined, Download, Upload, SlowReader, Slowloris, RstMidRequest, RstMidResponse, HalfClose, Churn, Http2, Tls, WebSocket }

internal enum HandlerMode { Immediate, ManyFlushes, FlushThenBlock, SyncWrites, Throw, Abort, Events }

internal enum PoolStress { None, Flood, BlockAll }

/// <summary>What one client does: its kind, the handler it asks for, sizes, counts, pauses, and the seed of its bytes.</summary>
internal sealed record ClientPlan(int Id, ClientKind Kind, HandlerMode Handler, long Size, int Count, int PauseMs, ulong DataSeed)
{
    /// <summary>The handler deliberately cuts the response short: the client may see the connection end.</summary>
    public bool HandlerCutsShort => Handler is HandlerMode.Throw or HandlerMode.Abort;

    /// <summary>
    /// The connection may end before the whole answer without fault of the transport: the client resets it itself
    /// (then only "no hang, no leak" applies), or it half-closed after its request, which Kestrel may answer by
    /// closing before the response on Sockets too (seed 1008).
    /// </summary>
    public bool ClientResets => Kind is ClientKind.RstMidRequest or ClientKind.RstMidResponse or ClientKind.HalfClose;

    public override string ToString() => $"#{Id} {Kind} handler={Handler} size={Size} count={Count} pause={PauseMs}ms";
}

/// <summary>Per-operation fault probabilities (per mille) for the seam; all 0 when the seed injects nothing.</summary>
internal sealed record FaultPlan(int DirectSendPerMille, int EnterPerMille, int DelayPerMille, int ReceiveEndPerMille, bool FailARing)
{
    public static readonly FaultPlan None = new(0, 0, 0, 0, false);

    public bool Any => this != None;

    /// <summary>Faults that end connections (a reset send or receive, a failed ring): clients may then see a reset.</summary>
    public bool EndsConnections => DirectSendPerMille > 0 || ReceiveEndPerMille > 0 || FailARing;
}

/// <summary>
/// Everything one seed decides, drawn from one System.Random in a fixed order, so that the seed alone replays it:
/// the options row (unless pinned), the clients, the faults and the thread-pool stress.
/// </summary>
internal sealed record ChaosPlan(int Seed, ChaosRow Row, IReadOnlyList<ClientPlan> Clients, FaultPlan Faults, PoolStress Pool, int Concurrency, long MaxTransfer)
{
    public const long CiMaxTransfer = 4L << 20;
    public const long LongMaxTransfer = 64L << 20;

    public static ChaosPlan Create(int seed, string? rowName, int clientCount, long maxTransfer)
    {
        var random = new Random(seed);
        var row = rowName is null ? ChaosRow.All[random.Next(ChaosRow.All.Length)] : ChaosRow.Named(rowName);
        var clients = new List<ClientPlan>();
        for (int i = 0; i < clientCount; i++)
        {
            var client = DrawClient(random, i, maxTransfer);
            // Inline runs handlers on the ring thread, which the README allows only for handlers that never block:
            // a blocking one stalls every connection of its ring (a synchronous write waits for the ring it blocks).
            bool inline = row.Name.StartsWith("inline", StringComparison.Ordinal);
            clients.Add(inline && client.Handler is HandlerMode.FlushThenBlock or HandlerMode.SyncWrites ? client with { Handler = HandlerMode.ManyFlushes } : client);
        }
        var faults = random.Next(3) == 0 ? FaultPlan.None : new FaultPlan(
            DirectSendPerMille: Pick(random, 0, 5, 30),
            EnterPerMille: Pick(random, 0, 10, 50),
            DelayPerMille: Pick(random, 0, 20, 100),
            ReceiveEndPerMille: Pick(random, 0, 20, 100),
            FailARing: random.Next(5) == 0);
        var pool = (PoolStress)random.Next(3);
        return new ChaosPlan(seed, row, clients, faults, pool, Concurrency: random.Next(4, 17), maxTransfer);
    }

    private static int Pick(Random random, params int[] values) => values[random.Next(values.Length)];

    private static ClientPlan DrawClient(Random random, int id, long maxTransfer)
    {
        var kind = (ClientKind)random.Next(Enum.GetValues<ClientKind>().Length);
        // Mostly the plain handlers, so that most connections carry data that must arrive whole.
        var handler = random.Next(10) < 6 ? (HandlerMode)random.Next(4) : (HandlerMode)random.Next(7);
        // Sizes spread over orders of magnitude: 1 byte to maxTransfer, log-uniform.
        long size = Math.Max(1, (long)Math.Pow(2, random.NextDouble() * Math.Log2(maxTransfer)));
        size = kind switch
        {
            ClientKind.KeepAlive or ClientKind.Pipelined or ClientKind.Churn or ClientKind.Http2 or ClientKind.WebSocket => Math.Min(size, 256 * 1024),
            _ when handler == HandlerMode.Events => Math.Min(size, 64 * 1024),
            _ => size,
        };
        return new ClientPlan(id, kind, handler, size, Count: random.Next(1, 9), PauseMs: random.Next(0, 400), DataSeed: (ulong)random.NextInt64());
    }

    public string Describe()
    {
        var text = new StringBuilder();
        text.AppendLine($"seed {Seed}: row {Row.Name}, {Clients.Count} clients ({Concurrency} at once), pool {Pool}, faults {Faults}");
        foreach (var client in Clients)
        {
            text.AppendLine($"  {client}");
        }
        return text.ToString();
    }
}
