using System.Net.WebSockets;
using Kestrel.Transport.IoUring.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Kestrel.Transport.IoUring.Tests.Protocols;

public sealed class WebSocketTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    private static Task<IoUringTestServer> StartEchoServerAsync() => IoUringTestServer.StartAsync(configureApp: app =>
    {
        app.UseWebSockets();
        app.Map("/ws", async (HttpContext context) =>
        {
            if (!context.WebSockets.IsWebSocketRequest || context.Features.Get<IIoUringConnectionFeature>() is null)
            {
                context.Response.StatusCode = 400;
                return;
            }
            using var socket = await context.WebSockets.AcceptWebSocketAsync();
            var message = new MemoryStream();
            var buffer = new byte[16 * 1024];
            while (true)
            {
                var result = await socket.ReceiveAsync(buffer, CancellationToken.None);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None);
                    return;
                }
                message.Write(buffer, 0, result.Count);
                if (result.EndOfMessage)
                {
                    await socket.SendAsync(message.GetBuffer().AsMemory(0, (int)message.Length), result.MessageType, true, CancellationToken.None);
                    message.SetLength(0);
                }
            }
        });
    });

    private static async Task<byte[]> ReceiveMessageAsync(ClientWebSocket socket, CancellationToken cancellationToken)
    {
        var message = new MemoryStream();
        var buffer = new byte[32 * 1024];
        while (true)
        {
            var result = await socket.ReceiveAsync(buffer, cancellationToken);
            Assert.NotEqual(WebSocketMessageType.Close, result.MessageType);
            message.Write(buffer, 0, result.Count);
            if (result.EndOfMessage)
            {
                return message.ToArray();
            }
        }
    }

    [Fact]
    public async Task Echo_1B_64KiB_1MiB()
    {
        await using var server = await StartEchoServerAsync();
        using var cts = new CancellationTokenSource(Timeout);
        using var client = new ClientWebSocket();
        await client.ConnectAsync(new Uri($"ws://127.0.0.1:{server.Port}/ws"), cts.Token);
        Assert.Equal(WebSocketState.Open, client.State);

        int[] sizes = [1, 64 * 1024, 1024 * 1024, 1, 1024 * 1024 + 3];
        for (int i = 0; i < sizes.Length; i++)
        {
            var payload = new byte[sizes[i]];
            PatternData.Fill(payload, 0, (ulong)i);
            // Receive concurrently with sending, as a real full-duplex client would.
            Task<byte[]> echo = ReceiveMessageAsync(client, cts.Token);
            await client.SendAsync(payload, WebSocketMessageType.Binary, endOfMessage: true, cts.Token);
            byte[] received = await echo;
            Assert.Equal(payload.Length, received.Length);
            Assert.True(payload.AsSpan().SequenceEqual(received), $"message {i} ({sizes[i]} B) came back different");
        }

        // A text message sent in fragments is reassembled and echoed whole.
        var text = "fragmented text message, "u8.ToArray();
        Task<byte[]> textEcho = ReceiveMessageAsync(client, cts.Token);
        await client.SendAsync(text.AsMemory(0, 10), WebSocketMessageType.Text, false, cts.Token);
        await client.SendAsync(text.AsMemory(10), WebSocketMessageType.Text, true, cts.Token);
        Assert.Equal(text, await textEcho);

        await client.CloseAsync(WebSocketCloseStatus.NormalClosure, "done", cts.Token);
        Assert.Equal(WebSocketState.Closed, client.State);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, client.CloseStatus);
    }

    [Fact]
    public async Task Echo_ManyConcurrentSockets()
    {
        await using var server = await StartEchoServerAsync();
        using var cts = new CancellationTokenSource(Timeout);
        await Task.WhenAll(Enumerable.Range(0, 20).Select(async c =>
        {
            using var client = new ClientWebSocket();
            await client.ConnectAsync(new Uri($"ws://127.0.0.1:{server.Port}/ws"), cts.Token);
            for (int i = 0; i < 20; i++)
            {
                var payload = new byte[1 + (c * 997 + i * 4099) % 40000];
                PatternData.Fill(payload, i, (ulong)c);
                Task<byte[]> echo = ReceiveMessageAsync(client, cts.Token);
                await client.SendAsync(payload, WebSocketMessageType.Binary, true, cts.Token);
                Assert.Equal(payload, await echo);
            }
            await client.CloseAsync(WebSocketCloseStatus.NormalClosure, null, cts.Token);
        }));
    }
}
