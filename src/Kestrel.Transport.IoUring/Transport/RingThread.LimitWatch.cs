using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

// The limit watch: a multishot accept takes everything in the backlog before a single completion is seen, so it is
// armed only while the descriptor budget has room for a whole backlog. An operator can lower RLIMIT_NOFILE at any
// time (prlimit) without a connection arriving: once a second, while a multishot accept is armed, the limit is read
// again, and if the room is gone the multishot accept gives way to one accept per connection.
internal sealed unsafe partial class RingThread
{
    private KernelTimespec* _limitWatchTimespec;

    /// <summary>The budget leaves room for a multishot accept taking a whole backlog at once.</summary>
    private bool HasRoomForMultishotAccept
    {
        get
        {
            _context.Descriptors.Refresh();
            return _context.Descriptors.Remaining > _context.Options.Backlog + 64;
        }
    }

    private void WatchLimit(Acceptor acceptor)
    {
        if (acceptor.Watching)
        {
            return;
        }
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _limitWatchTimespec, acceptor.WatchUserData);
        acceptor.Watching = true;
    }

    private void StopLimitWatch(Acceptor acceptor)
    {
        if (acceptor.Watching)
        {
            IoUringSqe* sqe = _ring.GetSqe();
            SqePreparation.PrepareCancel(sqe, acceptor.WatchUserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
            sqe->Flags |= SqeFlags.CqeSkipSuccess;
        }
    }

    private void OnLimitWatchExpired(Acceptor acceptor)
    {
        acceptor.Watching = false;
        if (acceptor.Stopped || !acceptor.Armed || !acceptor.Multishot)
        {
            MaybeFinishAcceptor(acceptor); // nothing multishot to watch any more
            return;
        }
        if (HasRoomForMultishotAccept)
        {
            WatchLimit(acceptor);
            return;
        }
        // The room is gone: end the multishot accept; its last completion re-arms it one connection at a time.
        _context.Log.AcceptingOneAtATime(acceptor.Listener.EndPoint, _context.Descriptors.Limit, _context.Descriptors.Open);
        IoUringSqe* cancel = _ring.GetSqe();
        SqePreparation.PrepareCancel(cancel, acceptor.UserData, UserData.Encode(OperationKind.Cancel, 0, acceptor.Index));
        cancel->Flags |= SqeFlags.CqeSkipSuccess;
        acceptor.Multishot = false;
    }
}
