using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// One accepted connection, served by the ring that accepted it. Kestrel sees a <see cref="ConnectionContext"/> whose
/// <see cref="Transport"/> pipes are fed by a multishot recv (input) and drained by one send at a time (output).
/// Everything in the "ring thread" regions runs on the ring's thread only; the public members may be called from any
/// thread and hand their work to it.
/// <para>
/// Lifecycle, as in Kestrel's Sockets transport: peer FIN completes the input; peer RST completes it with
/// <see cref="ConnectionResetException"/>; the send loop ending gracefully (or <c>Abort(null)</c>) sends FIN;
/// <c>Abort(reason)</c> or a send error sends RST (FIN with <see cref="IoUringTransportOptions.FinOnError"/>);
/// <see cref="ConnectionClosed"/> fires on the thread pool when receiving ends; the descriptor is closed only after
/// the kernel holds no request of this connection, so a reused slot never sees a stale completion.
/// </para>
/// </summary>
internal sealed partial class IoUringConnection : ConnectionContext,
    IConnectionIdFeature, IConnectionTransportFeature, IConnectionItemsFeature, IMemoryPoolFeature,
    IConnectionLifetimeFeature, IConnectionEndPointFeature, IIoUringConnectionFeature
{
    private readonly RingThread _ring;
    private readonly IoUringTransportContext _context;
    private readonly IoUringTrace _log;
    private readonly int _fd;
    private readonly int _fixedSlot;
    private readonly ulong _cancelUserData;

    private readonly IDuplexPipe _originalTransport; // the application's ends, even if middleware replaces Transport
    private readonly ConnectionReceiver _receiver; // the receive direction: the input pipe's writer
    private readonly ConnectionSender _sender; // the send direction: the output pipe's reader

    private readonly CancellationTokenSource _connectionClosedSource = new();
    private readonly TaskCompletionSource _connectionClosedFired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _socketClosed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private IFeatureCollection? _features;
    private IDictionary<object, object?>? _items;
    private string? _connectionId;
    private ConnectionAbortedException? _pendingAbortReason;
    private int _abortRequested;

    // ---- ring-thread state ----
    private ConnectionPhase _phase;
    private bool _zeroCopyPagesReleased; // reset in place so the kernel lets go of zero-copy pages (see ReleaseZeroCopyPagesOnAbort)
    private Exception? _shutdownReason; // set with the phase leaving Open: why the connection ends

    public IoUringConnection(RingThread ring, IoUringConnectionListener listener, int slot, uint generation,
        int fd, int fixedSlot, EndPoint? localEndPoint, EndPoint? remoteEndPoint)
    {
        _ring = ring;
        _context = ring.Context;
        _log = _context.Log;
        Slot = slot;
        _fd = fd;
        _fixedSlot = fixedSlot;
        _cancelUserData = UserData.Encode(OperationKind.Cancel, generation, slot);
        LocalEndPoint = localEndPoint;
        RemoteEndPoint = remoteEndPoint;
        MemoryPool = ring.MemoryPool;

        var (input, applicationInput) = ring.CreateInputPipe();
        var output = new Pipe(ring.CreateOutputPipeOptions(this));
        _receiver = new ConnectionReceiver(this, ring, input.Writer, fixedSlot >= 0 ? fixedSlot : fd, fixedSlot >= 0,
            UserData.Encode(OperationKind.Receive, generation, slot), _cancelUserData);
        _sender = new ConnectionSender(this, ring, output.Reader, fd, fixedSlot,
            UserData.Encode(OperationKind.Send, generation, slot), _cancelUserData,
            ZeroCopyPolicy.AllowsPipeMemory(_context.Options, localEndPoint, remoteEndPoint));
        Transport = _originalTransport = new DuplexPipe(applicationInput, output.Writer);
        ConnectionClosed = _connectionClosedSource.Token;
    }

    public int Slot { get; }

    /// <summary>The send direction (tests look at its state).</summary>
    internal ConnectionSender Sender => _sender;

    /// <summary>The socket's ordinary descriptor (tests watch it close).</summary>
    internal int Descriptor => _fd;

    // ================================================================================================================
    // ConnectionContext and features (any thread)
    // ================================================================================================================

    public override string ConnectionId
    {
        get => _connectionId ??= ConnectionIds.Next();
        set => _connectionId = value;
    }

    public override IFeatureCollection Features => _features ??= CreateFeatures();

    public override IDictionary<object, object?> Items
    {
        get => _items ??= new ConnectionItems();
        set => _items = value;
    }

    public override IDuplexPipe Transport { get; set; }

    public override CancellationToken ConnectionClosed { get; set; }

    public override EndPoint? LocalEndPoint { get; set; }

    public override EndPoint? RemoteEndPoint { get; set; }

    public MemoryPool<byte> MemoryPool { get; }

    public int RingId => _ring.Index;

    public bool UsesRegisteredFile => _fixedSlot >= 0;

    private IFeatureCollection CreateFeatures()
    {
        var features = new FeatureCollection(10);
        features.Set<IConnectionIdFeature>(this);
        features.Set<IConnectionTransportFeature>(this);
        features.Set<IConnectionItemsFeature>(this);
        features.Set<IMemoryPoolFeature>(this);
        features.Set<IConnectionLifetimeFeature>(this);
        features.Set<IConnectionEndPointFeature>(this);
        features.Set<IIoUringConnectionFeature>(this);
        features.Set<IConnectionSocketFeature>(this);
        return features;
    }

    public override void Abort(ConnectionAbortedException abortReason)
    {
        // Kestrel passes null when the client sent FIN: that means a graceful close, as with Sockets.
        if (Interlocked.Exchange(ref _abortRequested, 1) == 1)
        {
            return;
        }
        _pendingAbortReason = abortReason;
        _ring.Schedule(static s =>
        {
            var c = (IoUringConnection)s!;
            c.AbortOnRingThread(c._pendingAbortReason);
        }, this);
    }

    public override async ValueTask DisposeAsync()
    {
        _originalTransport.Input.Complete();
        _originalTransport.Output.Complete();
        await _socketClosed.Task.ConfigureAwait(false);
        await _connectionClosedFired.Task.ConfigureAwait(false);
        _connectionClosedSource.Dispose();
    }

    // ================================================================================================================
    // Start (ring thread)
    // ================================================================================================================

    public void Start()
    {
        _receiver.Arm();
        _ = _sender.RunAsync();
    }

    public void AbortOnRingThread(ConnectionAbortedException? reason)
    {
        if (_phase == ConnectionPhase.Closed)
        {
            return;
        }
        Shutdown(reason);
        _sender.Stop();
        ReleaseZeroCopyPagesOnAbort();
    }

    /// <summary>
    /// A zero-copy send's pages stay the kernel's until the peer acknowledges them (its notification), and the close
    /// waits for that notification; a peer that stopped reading never acknowledges, so an abort would wait for ever.
    /// An abortive end (RST), or the ring stopping, therefore resets the connection in place first: connect(2) with
    /// AF_UNSPEC sends the RST and drops the socket's send queue, so the kernel lets go of the pages and the
    /// notification comes; the memory goes back and the descriptor closes only after it, as always. A graceful end
    /// (FIN) waits for the peer instead: those bytes are still to be delivered.
    /// </summary>
    private void ReleaseZeroCopyPagesOnAbort()
    {
        if (_zeroCopyPagesReleased || !_sender.KernelHoldsZeroCopyPages
            || (_phase != ConnectionPhase.ShuttingDownWithRst && !_ring.IsStopping))
        {
            return;
        }
        _zeroCopyPagesReleased = true;
        SocketOptions.Disconnect(_fd);
    }

    // ================================================================================================================
    // Shutdown and close (ring thread)
    // ================================================================================================================

    /// <summary>Ends the connection once: FIN for a graceful end (reason null), RST for an error or abort.</summary>
    private void Shutdown(Exception? reason)
    {
        if (_phase != ConnectionPhase.Open)
        {
            return;
        }
        _shutdownReason = reason ?? new ConnectionAbortedException("The io_uring transport's send loop completed gracefully.");

        if (!_context.Options.FinOnError && reason is not null)
        {
            _log.ConnectionWriteRst(ConnectionId, reason.Message);
            // Linger 0 makes the final close abortive; the close itself waits until the kernel holds no request.
            SocketOptions.SetLingerZero(_fd);
            _phase = ConnectionPhase.ShuttingDownWithRst;
        }
        else
        {
            _log.ConnectionWriteFin(ConnectionId, _shutdownReason.Message);
            // SHUTDOWN goes out linked before the close, once the kernel holds no request of ours.
            _phase = ConnectionPhase.ShuttingDownWithFin;
        }

        _receiver.Stop();
        _sender.Stop();
    }

    /// <summary>Closes the descriptor once the connection is shut down and the kernel holds none of its requests.</summary>
    public void MaybeClose()
    {
        // The sender's Done also means no direct send can still be using the descriptor.
        if (_phase is ConnectionPhase.Open or ConnectionPhase.Closed || !_sender.IsDone || !_receiver.IsSettled)
        {
            return;
        }
        bool sendFin = _phase == ConnectionPhase.ShuttingDownWithFin;
        _phase = ConnectionPhase.Closed;
        _receiver.Complete(null);
        RetireSocket();
        _ring.CloseSocket(_fd, _fixedSlot, sendFin);
        _ring.ReleaseConnection(this);
        _ring.Metrics.OnConnectionClosed();
        _socketClosed.TrySetResult();
    }
}

/// <summary>Where a connection is in its life (ring thread).</summary>
internal enum ConnectionPhase
{
    /// <summary>Receiving and sending.</summary>
    Open,

    /// <summary>Ending gracefully: once the kernel holds none of its requests, SHUTDOWN (FIN) then close.</summary>
    ShuttingDownWithFin,

    /// <summary>Ending abortively: linger 0 is set, so the close sends RST once the kernel holds none of its requests.</summary>
    ShuttingDownWithRst,

    /// <summary>The close chain has been submitted; the slot is free for another connection.</summary>
    Closed,
}
