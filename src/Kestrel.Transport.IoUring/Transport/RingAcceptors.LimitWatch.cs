using Kestrel.Transport.IoUring.Abi;
using Kestrel.Transport.IoUring.Core;

namespace Kestrel.Transport.IoUring.Transport;

// The limit watch: while a multishot accept is armed, a timeout reads RLIMIT_NOFILE again once a second, and if the
// room for a whole backlog is gone the multishot accept gives way to one accept at a time. Ring-thread only.
internal sealed unsafe partial class RingAcceptors
{
    /// <summary>The budget, as last refreshed, leaves room for a multishot accept taking a whole backlog at once.</summary>
    private bool HasRoomForMultishotAccept => _context.Descriptors.Remaining > _context.Options.Backlog + 64;

    private void Watch(Acceptor acceptor)
    {
        IoUringSqe* sqe = _ring.GetSqe();
        SqePreparation.PrepareTimeout(sqe, _watchTimespec, acceptor.WatchUserData);
        acceptor.OnWatchArmed();
    }

    private void OnWatchExpired(Acceptor acceptor)
    {
        acceptor.OnWatchEnded();
        if (acceptor.State != AcceptorState.ArmedMultishot)
        {
            return; // nothing multishot to watch any more
        }
        _context.Descriptors.Refresh(); // the operator may have lowered the limit with no connection arriving
        if (HasRoomForMultishotAccept)
        {
            Watch(acceptor);
            return;
        }
        // The room is gone: end the multishot accept; its last completion re-arms it one connection at a time.
        _context.Log.AcceptingOneAtATime(acceptor.Listener.EndPoint, _context.Descriptors.Limit, _context.Descriptors.Open);
        Cancel(acceptor.UserData, acceptor);
        acceptor.OnMultishotGivingWay();
    }
}
