"""Python Bot API libraries against the gateway: calls, an upload, a download, getUpdates,
an error, and each library's own polling loop answering a message.

usage: python py_clients.py GATEWAY_URL SANDBOX_URL TOKEN WORK_DIR
"""
import asyncio, json, os, sys, threading, urllib.request

GW, SB, TOKEN, WORK = sys.argv[1:5]
BOT_ID = int(TOKEN.split(':')[0])
path = os.path.join(WORK, 'py-doc.bin')
with open(path, 'wb') as f:
    f.write(os.urandom(300_000))
want = open(path, 'rb').read()


def inject(text):
    update = {"message": {"message_id": 1, "date": 0,
                          "chat": {"id": 5, "type": "private", "first_name": "U"},
                          "from": {"id": 5, "is_bot": False, "first_name": "U"}, "text": text}}
    req = urllib.request.Request(SB + '/control/updates',
                                 data=json.dumps({"bot_id": BOT_ID, "update": update}).encode(),
                                 headers={'content-type': 'application/json'})
    return json.loads(urllib.request.urlopen(req).read())['update_id']


def replied(text):
    calls = json.loads(urllib.request.urlopen(f"{SB}/control/calls?bot_id={BOT_ID}&method=sendMessage").read())
    return any(c["params"].get("text") == text for c in calls)


async def ptb():
    from telegram import Bot
    from telegram.ext import Application, MessageHandler, filters
    bot = Bot(TOKEN, base_url=f"{GW}/bot", base_file_url=f"{GW}/file/bot")
    async with bot:
        assert (await bot.get_me()).id == BOT_ID
        assert (await bot.send_message(5, "hi ptb")).text == "hi ptb"
        d = await bot.send_document(5, document=open(path, 'rb'), filename="doc with space.bin", caption="c")
        f = await bot.get_file(d.document.file_id)
        assert bytes(await f.download_as_bytearray()) == want, "download differs"
        uid = inject("hello ptb")
        ups = await bot.get_updates(offset=0, timeout=5)
        assert any(u.update_id == uid for u in ups)
        await bot.get_updates(offset=uid + 1, timeout=0)
        try:
            await bot.send_message("nochat", "x")
            raise SystemExit("expected an error")
        except Exception as e:
            assert "chat not found" in str(e).lower(), e
    app = Application.builder().token(TOKEN).base_url(f"{GW}/bot").base_file_url(f"{GW}/file/bot").build()
    got = asyncio.Event()

    async def on_message(update, context):
        await update.message.reply_text("pong " + update.message.text)
        got.set()

    app.add_handler(MessageHandler(filters.TEXT, on_message))
    async with app:
        await app.start()
        await app.updater.start_polling(timeout=2, poll_interval=0)
        inject("ping ptb")
        await asyncio.wait_for(got.wait(), 60)
        await app.updater.stop()
        await app.stop()
    assert replied("pong ping ptb")
    print("python-telegram-bot ok")


async def aio():
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.types import FSInputFile
    bot = Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(GW)))
    try:
        assert (await bot.get_me()).id == BOT_ID
        await bot.send_message(5, "hi aiogram")
        d = await bot.send_document(5, FSInputFile(path, filename="aio.bin"))
        f = await bot.get_file(d.document.file_id)
        assert (await bot.download_file(f.file_path)).read() == want
        uid = inject("hello aiogram")
        ups = await bot.get_updates(offset=0, timeout=5)
        assert any(u.update_id == uid for u in ups)
        await bot.get_updates(offset=uid + 1, timeout=0)
        dp = Dispatcher()

        @dp.message()
        async def on_message(message):
            await message.answer("pong " + message.text)
            await dp.stop_polling()

        inject("ping aiogram")
        await asyncio.wait_for(dp.start_polling(bot, polling_timeout=2, handle_signals=False, close_bot_session=False), 60)
    finally:
        await bot.session.close()
    assert replied("pong ping aiogram")
    print("aiogram ok")


def telebot_():
    import telebot
    from telebot import apihelper
    apihelper.API_URL = GW + "/bot{0}/{1}"
    apihelper.FILE_URL = GW + "/file/bot{0}/{1}"
    bot = telebot.TeleBot(TOKEN)
    assert bot.get_me().id == BOT_ID
    bot.send_message(5, "hi telebot")
    d = bot.send_document(5, open(path, 'rb'), visible_file_name="tb.bin")
    assert bot.download_file(bot.get_file(d.document.file_id).file_path) == want
    uid = inject("hello telebot")
    assert any(u.update_id == uid for u in bot.get_updates(offset=0, timeout=5))
    bot.get_updates(offset=uid + 1, timeout=0)

    @bot.message_handler(func=lambda m: True)
    def on_message(m):
        bot.reply_to(m, "pong " + m.text)
        bot.stop_polling()

    inject("ping telebot")
    t = threading.Thread(target=lambda: bot.polling(non_stop=False, interval=0, timeout=2, long_polling_timeout=2))
    t.start()
    t.join(60)
    assert not t.is_alive(), "polling did not stop"
    assert replied("pong ping telebot")
    print("pyTelegramBotAPI ok")


which = sys.argv[5] if len(sys.argv) > 5 else "all"
if which in ("all", "ptb"):
    asyncio.run(ptb())
if which in ("all", "aiogram"):
    asyncio.run(aio())
if which in ("all", "telebot"):
    telebot_()
