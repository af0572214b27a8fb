using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Text.Json;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core.Internal.Http;

namespace Benchmarks;

/// <summary>
/// The platform mode: HTTP/1.1 straight on the transport's pipes with Kestrel's public HttpParser, no HTTP stack.
/// Every complete request in a read is answered, then the output is flushed once (pipelining).
/// </summary>
public sealed class PlatformConnectionHandler : ConnectionHandler
{
    public override Task OnConnectedAsync(ConnectionContext connection) => new PlatformConnection(connection.Transport).RunAsync();
}

internal sealed class PlatformConnection : IHttpRequestLineHandler, IHttpHeadersHandler
{
    private static readonly HttpParser<PlatformConnection> s_parser = new();

    private static ReadOnlySpan<byte> PlaintextHead => "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: text/plain\r\nContent-Length: 13"u8;
    private static ReadOnlySpan<byte> JsonHead => "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: application/json\r\nContent-Length: "u8;
    private static ReadOnlySpan<byte> NotFound => "HTTP/1.1 404 Not Found\r\nServer: Kestrel\r\nContent-Length: 0"u8;
    private static ReadOnlySpan<byte> BadRequest => "HTTP/1.1 400 Bad Request\r\nServer: Kestrel\r\nContent-Length: 0\r\nConnection: close"u8;
    private static ReadOnlySpan<byte> CrLfCrLf => "\r\n\r\n"u8;

    private enum Route { None, Plaintext, Json, NotFound }
    private enum State { StartLine, Headers }

    private readonly IDuplexPipe _transport;
    private readonly ArrayBufferWriter<byte> _jsonBuffer = new(64);
    private Utf8JsonWriter? _jsonWriter;
    private State _state;
    private Route _route;
    private bool _hasBody;

    public PlatformConnection(IDuplexPipe transport) => _transport = transport;

    public async Task RunAsync()
    {
        PipeReader input = _transport.Input;
        PipeWriter output = _transport.Output;
        try
        {
            while (true)
            {
                ReadResult result = await input.ReadAsync();
                ReadOnlySequence<byte> buffer = result.Buffer;
                bool close = false;
                int answered;
                SequencePosition consumed;
                try
                {
                    answered = ParseAndAnswer(buffer, output, out consumed);
                }
                catch (Microsoft.AspNetCore.Http.BadHttpRequestException)
                {
                    Write(output, BadRequest, withDate: true, CrLfCrLf);
                    answered = 1;
                    consumed = buffer.End;
                    close = true;
                }
                input.AdvanceTo(consumed, buffer.End);
                if (answered > 0)
                {
                    FlushResult flush = await output.FlushAsync();
                    if (flush.IsCompleted) break;
                }
                if (close || result.IsCompleted) break;
            }
        }
        catch (ConnectionResetException)
        {
        }
        catch (ConnectionAbortedException)
        {
        }
        await input.CompleteAsync();
        await output.CompleteAsync();
    }

    private int ParseAndAnswer(ReadOnlySequence<byte> buffer, PipeWriter output, out SequencePosition consumed)
    {
        var reader = new SequenceReader<byte>(buffer);
        int answered = 0;
        while (true)
        {
            if (_state == State.StartLine)
            {
                _route = Route.None;
                _hasBody = false;
                if (!s_parser.ParseRequestLine(this, ref reader)) break;
                _state = State.Headers;
            }
            if (!s_parser.ParseHeaders(this, ref reader)) break;
            _state = State.StartLine;
            if (_hasBody)
            {
                throw new Microsoft.AspNetCore.Http.BadHttpRequestException("request bodies are not supported");
            }
            Answer(output);
            answered++;
        }
        consumed = reader.Position;
        return answered;
    }

    private void Answer(PipeWriter output)
    {
        switch (_route)
        {
            case Route.Plaintext:
                Write(output, PlaintextHead, withDate: true, "\r\n\r\nHello, World!"u8);
                break;
            case Route.Json:
                _jsonWriter ??= new Utf8JsonWriter(_jsonBuffer, new JsonWriterOptions { SkipValidation = true });
                ArrayBufferWriter<byte>? jsonBuffer = _jsonBuffer;
                ReadOnlySpan<byte> body = JsonMessage.Serialize(ref jsonBuffer, ref _jsonWriter);
                Span<byte> length = stackalloc byte[11];
                Utf8Formatter.TryFormat(body.Length, length, out int digits);
                WriteJson(output, length[..digits], body);
                break;
            default:
                Write(output, NotFound, withDate: true, CrLfCrLf);
                break;
        }
    }

    private static void Write(PipeWriter output, ReadOnlySpan<byte> head, bool withDate, ReadOnlySpan<byte> tail)
    {
        ReadOnlySpan<byte> date = withDate ? DateHeader.CrLfDate : default;
        int total = head.Length + date.Length + tail.Length;
        Span<byte> span = output.GetSpan(total);
        head.CopyTo(span);
        date.CopyTo(span[head.Length..]);
        tail.CopyTo(span[(head.Length + date.Length)..]);
        output.Advance(total);
    }

    private static void WriteJson(PipeWriter output, ReadOnlySpan<byte> length, ReadOnlySpan<byte> body)
    {
        ReadOnlySpan<byte> head = JsonHead;
        ReadOnlySpan<byte> date = DateHeader.CrLfDate;
        int total = head.Length + length.Length + date.Length + 4 + body.Length;
        Span<byte> span = output.GetSpan(total);
        int at = 0;
        head.CopyTo(span); at += head.Length;
        length.CopyTo(span[at..]); at += length.Length;
        date.CopyTo(span[at..]); at += date.Length;
        CrLfCrLf.CopyTo(span[at..]); at += 4;
        body.CopyTo(span[at..]); at += body.Length;
        output.Advance(at);
    }

    public void OnStartLine(HttpVersionAndMethod versionAndMethod, TargetOffsetPathLength targetPath, Span<byte> startLine)
    {
        ReadOnlySpan<byte> path = startLine.Slice(targetPath.Offset, targetPath.Length);
        _route = path.SequenceEqual("/plaintext"u8) ? Route.Plaintext
            : path.SequenceEqual("/json"u8) ? Route.Json
            : Route.NotFound;
    }

    public void OnHeader(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        if (name.Length == 14 && System.Text.Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
        {
            _hasBody |= !(value.Length == 1 && value[0] == (byte)'0');
        }
        else if (name.Length == 17 && System.Text.Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
        {
            _hasBody = true;
        }
    }

    public void OnHeadersComplete(bool endStream) { }

    public void OnStaticIndexedHeader(int index) { }

    public void OnStaticIndexedHeader(int index, ReadOnlySpan<byte> value) { }
}
