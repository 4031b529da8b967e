// Node Bot API libraries against the gateway: calls, an upload, a download, getUpdates, an
// error, and each library's own polling loop answering a message.
// usage: WHICH=grammy|telegraf|ntba2|ntba067 NODE_DIR=<dir with node_modules> \
//        node node_clients.mjs GATEWAY_URL SANDBOX_URL TOKEN WORK_DIR
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
const require = createRequire(path.join(process.env.NODE_DIR, 'package.json'));
const [GW, SB, TOKEN, WORK] = process.argv.slice(2);
const BOT_ID = Number(TOKEN.split(':')[0]);
const which = process.env.WHICH;
const file = path.join(WORK, `node-${which}.bin`);
fs.writeFileSync(file, Buffer.from(Array.from({ length: 200000 }, (_, i) => i % 251)));
const want = fs.readFileSync(file);
const assert = (c, m) => { if (!c) { throw new Error(m); } };
const version = (pkg) => JSON.parse(fs.readFileSync(path.join(process.env.NODE_DIR, 'node_modules', pkg, 'package.json'))).version;
async function inject(text) {
  const r = await fetch(SB + '/control/updates', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ bot_id: BOT_ID, update: { message: { message_id: 1, date: 0, chat: { id: 5, type: 'private', first_name: 'U' }, from: { id: 5, is_bot: false, first_name: 'U' }, text } } }) });
  return (await r.json()).update_id;
}
async function replied(text) {
  const calls = await (await fetch(`${SB}/control/calls?bot_id=${BOT_ID}&method=sendMessage`)).json();
  return calls.some(c => c.params.text === text);
}
const within = (ms, p) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error('timed out')), ms).unref())]);
const download = async (p) => Buffer.from(await (await fetch(`${GW}/file/bot${TOKEN}/${p}`)).arrayBuffer());

if (which === 'grammy') {
  const { Bot, InputFile } = require('grammy');
  const bot = new Bot(TOKEN, { client: { apiRoot: GW } });
  assert((await bot.api.getMe()).id === BOT_ID, 'getMe');
  await bot.api.sendMessage(5, 'hi grammy');
  const d = await bot.api.sendDocument(5, new InputFile(file, 'g.bin'));
  assert((await download((await bot.api.getFile(d.document.file_id)).file_path)).equals(want), 'download');
  const uid = await inject('hello grammy');
  assert((await bot.api.getUpdates({ offset: 0, timeout: 5 })).some(u => u.update_id === uid), 'updates');
  await bot.api.getUpdates({ offset: uid + 1, timeout: 0 });
  try { await bot.api.sendMessage('nochat', 'x'); throw new Error('expected'); } catch (e) { assert(String(e).includes('chat not found'), String(e)); }
  bot.on('message:text', async ctx => { await ctx.reply('pong ' + ctx.message.text); await bot.stop(); });
  await inject('ping grammy');
  await within(60000, bot.start({ timeout: 2 }));
  assert(await replied('pong ping grammy'), 'polling reply');
  console.log(`grammY ${version('grammy')} ok`);
} else if (which === 'telegraf') {
  const { Telegraf } = require('telegraf');
  const bot = new Telegraf(TOKEN, { telegram: { apiRoot: GW } });
  assert((await bot.telegram.getMe()).id === BOT_ID, 'getMe');
  await bot.telegram.sendMessage(5, 'hi telegraf');
  const d = await bot.telegram.sendDocument(5, { source: file, filename: 't.bin' });
  const link = await bot.telegram.getFileLink(d.document.file_id);
  assert(Buffer.from(await (await fetch(link)).arrayBuffer()).equals(want), 'download');
  const uid = await inject('hello telegraf');
  assert((await bot.telegram.getUpdates(5, 100, 0, undefined)).some(u => u.update_id === uid), 'updates');
  await bot.telegram.getUpdates(0, 100, uid + 1, undefined);
  let done;
  const answered = new Promise(r => { done = r; });
  bot.on('text', async ctx => { await ctx.reply('pong ' + ctx.message.text); done(); });
  await inject('ping telegraf');
  bot.launch().catch(() => {});
  await within(60000, answered);
  bot.stop('test over');
  assert(await replied('pong ping telegraf'), 'polling reply');
  console.log(`Telegraf ${version('telegraf')} ok`);
} else if (which === 'ntba2') {
  const { Api, Bot, InputFile } = require('node-telegram-bot-api');
  const api = new Api(TOKEN, { apiRoot: GW });
  assert((await api.getMe()).id === BOT_ID, 'getMe');
  await api.sendMessage({ chat_id: 5, text: 'hi ntba2' });
  const d = await api.sendDocument({ chat_id: 5, document: new InputFile(fs.readFileSync(file), { filename: 'n2.bin' }) });
  assert((await download((await api.getFile({ file_id: d.document.file_id })).file_path)).equals(want), 'download');
  const uid = await inject('hello ntba2');
  assert((await api.getUpdates({ offset: 0, timeout: 5 })).some(u => u.update_id === uid), 'updates');
  await api.getUpdates({ offset: uid + 1, timeout: 0 });
  try { await api.sendMessage({ chat_id: 'nochat', text: 'x' }); throw new Error('expected'); } catch (e) { assert(String(e).includes('chat not found'), String(e)); }
  const bot = new Bot(TOKEN, { apiRoot: GW });
  bot.on('message', async ctx => { await ctx.reply('pong ' + ctx.update.message.text); bot.stop(); });
  await inject('ping ntba2');
  await within(60000, bot.startPolling(undefined, { timeout: 2 }));
  assert(await replied('pong ping ntba2'), 'polling reply');
  console.log(`node-telegram-bot-api ${version('node-telegram-bot-api')} ok`);
} else if (which === 'ntba067') {
  process.env.NTBA_FIX_350 = '1';
  const TelegramBot = require('ntba067');
  const bot = new TelegramBot(TOKEN, { baseApiUrl: GW });
  assert((await bot.getMe()).id === BOT_ID, 'getMe');
  await bot.sendMessage(5, 'hi ntba');
  const d = await bot.sendDocument(5, file, {}, { filename: 'n.bin', contentType: 'application/octet-stream' });
  const chunks = [];
  await new Promise((res, rej) => { const s = bot.getFileStream(d.document.file_id); s.on('data', c => chunks.push(c)); s.on('end', res); s.on('error', rej); });
  assert(Buffer.concat(chunks).equals(want), 'download');
  const uid = await inject('hello ntba');
  assert((await bot.getUpdates({ offset: 0, timeout: 5 })).some(u => u.update_id === uid), 'updates');
  await bot.getUpdates({ offset: uid + 1, timeout: 0 });
  const poller = new TelegramBot(TOKEN, { baseApiUrl: GW, polling: { interval: 0, params: { timeout: 2 } } });
  const answered = new Promise(r => poller.on('message', async m => { await poller.sendMessage(m.chat.id, 'pong ' + m.text); r(); }));
  await inject('ping ntba');
  await within(60000, answered);
  await poller.stopPolling();
  assert(await replied('pong ping ntba'), 'polling reply');
  console.log(`node-telegram-bot-api ${version('ntba067')} ok`);
}
