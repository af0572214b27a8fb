using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// A bound listening socket with one multishot accept, on one ring (listeners take turns, so several listeners
/// share the accepting work). That ring spreads the accepted connections round-robin over all rings: it sets up its
/// own share and hands the others' descriptors over. (Arming a multishot accept on every ring would not spread them:
/// the kernel's exclusive accept wake-up always picks the first waiter, and a multishot waiter never leaves the
/// queue.) Each ring queues its connections here; Kestrel takes them with <see cref="AcceptAsync"/>. The socket is
/// created and bound with <see cref="Socket"/> (by default, or by the app's CreateBoundListenSocket hook), so binding (dual mode, Unix paths, port 0, errors) behaves as in the
/// Sockets transport.
/// </summary>
internal sealed class IoUringConnectionListener : IConnectionListener
{
    private readonly IoUringTransportContext _context;
    private readonly RingThread[] _rings;
    private readonly Channel<IoUringConnection> _accepted = Channel.CreateUnbounded<IoUringConnection>(
        new UnboundedChannelOptions { SingleReader = true, SingleWriter = false, AllowSynchronousContinuations = false });
    private readonly List<(RingThread Ring, Acceptor Acceptor)> _acceptors = new();
    private readonly object _gate = new();
    private Socket? _listenSocket;
    private Task? _unbindTask;
    private bool _disposed;

    public IoUringConnectionListener(IoUringTransportContext context, RingThread[] rings, EndPoint endPoint)
    {
        _context = context;
        _rings = rings;
        EndPoint = endPoint;
    }

    private static int s_listenerCount = -1;
    private int _nextRing;
    private volatile bool _unbinding;

    public EndPoint EndPoint { get; private set; }

    /// <summary>Accepted sockets need TCP_NODELAY set themselves (a caller's listening socket is not ours to change).</summary>
    public bool SetNoDelayOnAccept { get; private set; }

    /// <summary>Unbind has begun: connections accepted from now on are refused.</summary>
    public bool IsUnbinding => _unbinding;

    /// <summary>
    /// The ring that gets the next accepted connection: the next in turn that is alive, else the accepting ring
    /// itself (called on the acceptor's ring thread only).
    /// </summary>
    public RingThread NextRing(RingThread accepting)
    {
        for (int tries = 0; tries < _rings.Length; tries++)
        {
            RingThread ring = _rings[_nextRing];
            _nextRing = (_nextRing + 1) % _rings.Length;
            if (ring.AcceptsConnections)
            {
                return ring;
            }
        }
        return accepting;
    }

    public int ListenFd { get; private set; } = -1;

    /// <summary>Creates, binds and listens, then arms an accept on every ring.</summary>
    public async Task BindAsync()
    {
        Socket socket = CreateBoundSocket(EndPoint, _context.Options);
        try
        {
            if (EndPoint is not FileHandleEndPoint)
            {
                EndPoint = socket.LocalEndPoint!; // port 0 becomes the port the kernel chose
            }
            socket.Listen(_context.Options.Backlog);
            _listenSocket = socket;
            ListenFd = (int)socket.Handle;
            SetNoDelayOnAccept = EndPoint is FileHandleEndPoint && _context.Options.NoDelay && socket.LocalEndPoint is IPEndPoint;
            _nextRing = Interlocked.Increment(ref s_listenerCount) % _rings.Length;
            if (!await AddAcceptorOnLiveRingAsync(_nextRing).ConfigureAwait(false))
            {
                throw new InvalidOperationException("Every io_uring ring of the transport has failed; nothing can accept.");
            }
        }
        catch
        {
            await UnbindAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// The bound socket from <see cref="IoUringTransportOptions.CreateBoundListenSocket"/> (the default or the app's
    /// hook), with a taken address reported as Kestrel expects.
    /// </summary>
    private static Socket CreateBoundSocket(EndPoint endPoint, IoUringTransportOptions options)
    {
        Socket socket;
        try
        {
            socket = options.CreateBoundListenSocket(endPoint);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new AddressInUseException(e.Message, e);
        }
        if (endPoint is not FileHandleEndPoint && socket.ProtocolType == ProtocolType.Tcp)
        {
            // Accepted sockets inherit TCP_NODELAY from the listener, so this covers every connection.
            socket.NoDelay = options.NoDelay;
        }
        return socket;
    }

    /// <summary>Called by a ring before it arms this listener's accept; false once unbinding has begun (then it must not arm).</summary>
    public bool AddAcceptor(RingThread ring, Acceptor acceptor)
    {
        lock (_gate)
        {
            if (_unbinding)
            {
                return false;
            }
            _acceptors.Add((ring, acceptor));
            return true;
        }
    }

    /// <summary>The acceptor's ring has failed: accept on a live ring instead (unless unbinding). Called on the failed ring's thread.</summary>
    public void MoveAcceptor(RingThread failed, Acceptor acceptor)
    {
        lock (_gate)
        {
            _acceptors.Remove((failed, acceptor));
            if (_unbinding)
            {
                return;
            }
        }
        _ = MoveAcceptorAsync(failed.Index + 1);
    }

    private async Task MoveAcceptorAsync(int firstRing)
    {
        try
        {
            if (!await AddAcceptorOnLiveRingAsync(firstRing).ConfigureAwait(false))
            {
                _context.Log.NoRingLeftToAccept(EndPoint);
            }
        }
        catch (Exception e)
        {
            _context.Log.AcceptFailed(EndPoint, e);
        }
    }

    /// <summary>Arms this listener's accept on the first live ring from <paramref name="firstRing"/> on; false if none is left.</summary>
    private async Task<bool> AddAcceptorOnLiveRingAsync(int firstRing)
    {
        for (int i = 0; i < _rings.Length; i++)
        {
            RingThread ring = _rings[(firstRing + i) % _rings.Length];
            if (!ring.AcceptsConnections)
            {
                continue;
            }
            try
            {
                await ring.AddAcceptorAsync(this).ConfigureAwait(false);
                return true;
            }
            catch (RingFailedException)
            {
                // That ring failed meanwhile: try the next.
            }
        }
        return false;
    }

    /// <summary>Called on a ring thread for every connection it accepted for this listener.</summary>
    public void OnConnectionAccepted(IoUringConnection connection)
    {
        if (!_accepted.Writer.TryWrite(connection))
        {
            // Unbound in the meantime: nobody will take it.
            connection.AbortOnRingThread(new ConnectionAbortedException("The listener was unbound."));
            _ = connection.DisposeAsync();
        }
    }

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await _accepted.Reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
        {
            if (_accepted.Reader.TryRead(out var connection))
            {
                return connection;
            }
        }
        return null;
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            _unbindTask ??= UnbindCoreAsync();
        }
        return new ValueTask(_unbindTask);
    }

    private async Task UnbindCoreAsync()
    {
        (RingThread Ring, Acceptor Acceptor)[] acceptors;
        lock (_gate)
        {
            _unbinding = true; // under the lock: an acceptor is either in this snapshot or refused by AddAcceptor
            acceptors = _acceptors.ToArray();
        }
        // Cancel every multishot accept and wait for the kernel to confirm, so no accept completes after the close.
        await Task.WhenAll(acceptors.Select(a => a.Ring.StopAcceptorAsync(a.Acceptor))).ConfigureAwait(false);
        _listenSocket?.Dispose();
        _accepted.Writer.TryComplete();
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        await UnbindAsync().ConfigureAwait(false);
        // Connections accepted but never handed to Kestrel.
        while (_accepted.Reader.TryRead(out var connection))
        {
            connection.Abort(new ConnectionAbortedException("The listener was disposed."));
            await connection.DisposeAsync().ConfigureAwait(false);
        }
    }
}
