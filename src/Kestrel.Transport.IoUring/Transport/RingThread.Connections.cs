using System.Diagnostics;
using Kestrel.Transport.IoUring.Abi;

namespace Kestrel.Transport.IoUring.Transport;

// The ring's connections: set up from an accepted descriptor (here or handed to the ring whose turn it is), released
// and closed; and the listeners' requests to accept on this ring (see RingAcceptors).
internal sealed unsafe partial class RingThread
{
    /// <summary>Forgets a closed connection's slot (with a new generation); its descriptor's place in the budget comes back when its close completes.</summary>
    public void ReleaseConnection(IoUringConnection connection)
    {
        Debug.Assert(IsOwnerThread, "the slots are the ring thread's");
        _slots.Release(connection.Slot);
    }

    /// <summary>Closes a connection's socket once the kernel holds none of its requests (see <see cref="CloseChains"/>).</summary>
    public void CloseSocket(int fd, int fixedSlot, bool sendFin)
    {
        Debug.Assert(IsOwnerThread, "close chains are prepared in the ring thread's SQ");
        _closes.Close(fd, fixedSlot, sendFin);
    }

    /// <summary>The ring is stopping: its connections are being ended (ring thread).</summary>
    public bool IsStopping => _stopping;

    /// <summary>Close chains waiting for room in the SQ (ring thread).</summary>
    internal int PendingCloseChainsDeferred => _closes.Deferred;

    /// <summary>
    /// A connection accepted by this ring's acceptor. The listener spreads connections round-robin over the rings:
    /// this ring sets it up itself or hands the descriptor to the ring whose turn it is.
    /// </summary>
    internal void OnAccepted(Acceptor acceptor, int fd)
    {
        Debug.Assert(IsOwnerThread, "accept completions are reaped on the ring thread");
        _context.Descriptors.OnOpened();
        RingThread target = acceptor.Listener.NextRing(this);
        if (target == this)
        {
            SetUpConnection(acceptor.Listener, fd);
        }
        else
        {
            target.TakeHandOff(acceptor.Listener, fd);
        }
    }

    /// <summary>
    /// An accepted descriptor (already counted in the budget) handed to this ring by the accepting ring's thread. If
    /// this ring runs no more work by the time it would set it up, the descriptor is refused (RST) and its place given back.
    /// </summary>
    internal void TakeHandOff(IoUringConnectionListener listener, int fd)
        => PostOrAbandon(static s =>
        {
            var handOff = (ConnectionHandOff)s!;
            // Runs on the target ring's thread: Schedule from there queues locally, so this is that ring.
            handOff.Target.SetUpConnection(handOff.Listener, handOff.Fd);
        }, new ConnectionHandOff(this, listener, fd, _context.Descriptors));

    private void SetUpConnection(IoUringConnectionListener listener, int fd)
    {
        if (_stopping || listener.IsUnbinding)
        {
            // Accepted after unbind: refuse it the way a closed listener would.
            AcceptedDescriptor.Refuse(fd, countedIn: _context.Descriptors);
            return;
        }

        if (listener.SetNoDelayOnAccept)
        {
            SocketOptions.SetNoDelay(fd);
        }

        int fixedSlot = -1;
        if (_files is not null)
        {
            fixedSlot = _files.Install(fd);
            if (fixedSlot < 0)
            {
                Metrics.FixedFileTableFull.Add(1);
                fixedSlot = -1; // ordinary descriptor for this connection
            }
        }

        var (slot, generation) = _slots.Reserve();
        IoUringConnection connection;
        try
        {
            connection = new IoUringConnection(this, listener, slot, generation, fd, fixedSlot,
                SocketAddresses.LocalEndPoint(fd), SocketAddresses.RemoteEndPoint(fd));
        }
        catch (Exception e)
        {
            _slots.Release(slot);
            if (fixedSlot >= 0) _files!.Remove(fixedSlot);
            LinuxSyscalls.Close(fd);
            _context.Descriptors.OnClosed();
            _context.Log.AcceptFailed(listener.EndPoint, e);
            return;
        }
        _slots.Set(slot, connection);
        Metrics.OnConnectionAccepted();
        connection.Start();
        listener.OnConnectionAccepted(connection);
    }

    /// <summary>Makes this ring <paramref name="listener"/>'s acceptor: a multishot accept on its socket. Any thread; completes when armed.</summary>
    public Task AddAcceptorAsync(IoUringConnectionListener listener)
    {
        var request = new AcceptorRequest(this, listener);
        PostOrAbandon(static s =>
        {
            var request = (AcceptorRequest)s!;
            request.Armed.TrySetResult(request.Target._accepting!.Add(request.Listener));
        }, request);
        return request.Armed.Task;
    }

    /// <summary>Cancels the acceptor's multishot accept; the task completes when the kernel confirms it ended.</summary>
    public Task StopAcceptorAsync(Acceptor acceptor)
    {
        Post(static s =>
        {
            var (self, acceptor) = ((RingThread, Acceptor))s!;
            self._accepting!.Stop(acceptor);
        }, (this, acceptor));
        return acceptor.Finished.Task;
    }
}
