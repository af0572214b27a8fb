using Kestrel.Transport.IoUring.Core;
using Microsoft.AspNetCore.Connections;

namespace Kestrel.Transport.IoUring.Transport;

/// <summary>
/// A ring's table of live connections, indexed by the slot in their user_data. Each slot has a generation that
/// changes whenever the slot is freed, so completions that arrive for a previous occupant are recognised and dropped.
/// Ring-thread only.
/// </summary>
internal sealed class ConnectionSlots
{
    private IoUringConnection?[] _connections = new IoUringConnection?[64];
    private uint[] _generations = new uint[64];
    private readonly Stack<int> _free = new();
    private int _highWater;

    public int Count { get; private set; }

    public (int Slot, uint Generation) Reserve()
    {
        if (!_free.TryPop(out int slot))
        {
            if (_highWater == _connections.Length)
            {
                Array.Resize(ref _connections, _connections.Length * 2);
                Array.Resize(ref _generations, _generations.Length * 2);
            }
            slot = _highWater++;
        }
        Count++;
        return (slot, _generations[slot]);
    }

    public void Set(int slot, IoUringConnection connection) => _connections[slot] = connection;

    public bool TryGet(int slot, uint generation, out IoUringConnection connection)
    {
        if ((uint)slot < (uint)_highWater && _connections[slot] is { } c && _generations[slot] == generation)
        {
            connection = c;
            return true;
        }
        connection = null!;
        return false;
    }

    /// <summary>The slot's current occupant, whatever its generation: only for completions that cannot outlive it.</summary>
    public bool TryGetAny(int slot, out IoUringConnection connection)
    {
        if ((uint)slot < (uint)_highWater && _connections[slot] is { } c)
        {
            connection = c;
            return true;
        }
        connection = null!;
        return false;
    }

    public void Release(int slot)
    {
        _connections[slot] = null;
        _generations[slot] = UserData.Next(_generations[slot]);
        _free.Push(slot);
        Count--;
    }

    /// <summary>The connections in the table now (a copy: the caller may release them while walking it).</summary>
    public List<IoUringConnection> Live()
    {
        var live = new List<IoUringConnection>(Count);
        for (int i = 0; i < _highWater; i++)
        {
            if (_connections[i] is { } c)
            {
                live.Add(c);
            }
        }
        return live;
    }

    public void AbortAll(ConnectionAbortedException reason)
    {
        for (int i = 0; i < _highWater; i++)
        {
            _connections[i]?.AbortOnRingThread(reason);
        }
    }
}
