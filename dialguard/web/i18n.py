"""The console's two languages: English and Chinese (the operator's choice, kept in a cookie)."""

from __future__ import annotations

LANGS = ("en", "zh")

TEXT: dict[str, tuple[str, str]] = {
    "title": ("dialguard console", "dialguard 控制台"),
    "login": ("Sign in", "登录"),
    "logout": ("Sign out", "退出"),
    "user": ("User", "用户名"),
    "password": ("Password", "密码"),
    "bad_login": ("Wrong user name or password.", "用户名或密码错误。"),
    "rate_limited": ("Too many failed sign-ins: try again in {minutes} min.",
                     "登录失败次数过多：请在 {minutes} 分钟后重试。"),
    "signed_in_as": ("Signed in as {user} ({role})", "当前用户 {user}（{role}）"),
    "killswitch": ("Kill switch", "紧急停止"),
    "paused_none": ("Nothing is paused: calls are decided by the rules.", "没有暂停：呼叫按规则判定。"),
    "paused_item": ("Paused: {what} since {since}", "已暂停：{what}，自 {since}"),
    "all_outbound": ("all outbound calls", "全部外呼"),
    "campaign": ("Campaign", "外呼任务"),
    "pause_all": ("Pause all outbound", "暂停全部外呼"),
    "resume_all": ("Resume all outbound", "恢复全部外呼"),
    "pause_campaign": ("Pause campaign", "暂停任务"),
    "resume_campaign": ("Resume campaign", "恢复任务"),
    "reason": ("Reason (for the audit)", "原因（写入审计）"),
    "done_pause": ("Paused {what}.", "已暂停 {what}。"),
    "done_resume": ("Resumed {what}.", "已恢复 {what}。"),
    "forbidden": ("Refused: {msg}", "拒绝：{msg}"),
    "csrf": ("The form expired or did not come from this console: reload the page and try again.",
             "表单已过期或不是来自本控制台：请刷新页面后重试。"),
    "lookup": ("Number lookup", "号码查询"),
    "number": ("Number", "号码"),
    "agent": ("Agent", "坐席"),
    "check": ("Check", "查询"),
    "status": ("Status", "状态"),
    "allow": ("may be called now", "现在可以呼叫"),
    "deny": ("may not be called now", "现在不可呼叫"),
    "why": ("Why", "原因"),
    "next_eligible": ("Next eligible", "下次可呼叫时间"),
    "never": ("not by waiting (permanent reason)", "等待无法解除（永久原因）"),
    "bad_input": ("Bad input: {msg}", "输入有误：{msg}"),
    "language": ("中文", "English"),
    "home": ("Console", "控制台"),
    "history": ("History (audit, latest first)", "历史记录（审计，最新在前）"),
    "no_history": ("No decision recorded for this number.", "该号码没有判定记录。"),
    "live": ("Live view", "实时监控"),
    "per_minute": ("Decisions per minute (last 15 min, recorded time)", "每分钟判定数（最近 15 分钟）"),
    "minute": ("Minute", "分钟"),
    "decisions": ("Decisions", "判定"),
    "denied": ("Denied", "拒绝"),
    "by_reason": ("Denials by reason (last hour)", "按原因统计的拒绝（最近一小时）"),
    "by_campaign": ("By campaign (last hour)", "按任务统计（最近一小时）"),
    "health": ("Guard health", "守卫状态"),
    "backlog": ("Audit records waiting to be shipped", "待写入审计库的记录"),
    "allowed_col": ("Allowed", "允许"),
    "time": ("Time", "时间"),
    "callerids": ("Caller IDs", "主叫号码"),
    "callerid": ("Caller ID", "主叫号码"),
    "cid_intro": ("Health from reported outcomes over the rules' window (as `dialguard callerid health`).",
                  "按规则窗口内上报的呼叫结果计算的健康度（同 `dialguard callerid health`）。"),
    "cid_none": ("No caller ID in a pool.", "号码池中没有主叫号码。"),
    "pools": ("Pools", "号码池"),
    "calls": ("Calls in window", "窗口内呼叫"),
    "answer_rate": ("Answer rate", "接通率"),
    "short_rate": ("Short answers", "短通话率"),
    "reject_rate": ("Carrier rejections", "运营商拒接率"),
    "run": ("Current run", "连续拒接"),
    "complaints_1k": ("Complaints /1,000", "投诉/千次"),
    "optouts_1k": ("Opt-outs /1,000", "退订/千次"),
    "cooldown": ("Cool-down", "冷却"),
    "cool_until": ("until {until}: {why}", "至 {until}：{why}"),
    "cool_none": ("-", "-"),
    "cool_admin": ("set by an admin", "管理员设置"),
}


def pick(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGS:
        return cookie
    return "zh" if (accept_language or "").lower().startswith("zh") else "en"


def t(lang: str, key: str, **kw) -> str:
    en, zh = TEXT[key]
    s = zh if lang == "zh" else en
    return s.format(**kw) if kw else s
