"""The emulated Discord world: one bot, one guild with its channels, roles and users, and their JSON."""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Gateway intent bits (https://discord.com/developers/docs/events/gateway#gateway-intents).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
KNOWN_INTENTS = sum(1 << bit for bit in (*range(17), 20, 21, 24, 25))
PRIVILEGED_INTENTS = {
    INTENT_GUILD_MEMBERS: "GUILD_MEMBERS",
    INTENT_GUILD_PRESENCES: "GUILD_PRESENCES",
    INTENT_MESSAGE_CONTENT: "MESSAGE_CONTENT",
}

# Application flags that tell a client which privileged intents the developer portal has switched on.
APP_FLAG_GATEWAY_PRESENCE_LIMITED = 1 << 13
APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED = 1 << 15
APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19

# Permission bits (https://discord.com/developers/docs/topics/permissions).
PERM_CREATE_INSTANT_INVITE = 1 << 0
PERM_ADMINISTRATOR = 1 << 3
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_SEND_TTS_MESSAGES = 1 << 12
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MENTION_EVERYONE = 1 << 17
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_CONNECT = 1 << 20
PERM_SPEAK = 1 << 21
PERM_CHANGE_NICKNAME = 1 << 26
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    PERM_CREATE_INSTANT_INVITE | PERM_ADD_REACTIONS | PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES | PERM_READ_MESSAGE_HISTORY | PERM_USE_EXTERNAL_EMOJIS | PERM_CONNECT | PERM_SPEAK
    | PERM_CHANGE_NICKNAME | PERM_USE_APPLICATION_COMMANDS | PERM_SEND_MESSAGES_IN_THREADS
)
MODERATOR_PERMISSIONS = PERM_MENTION_EVERYONE | PERM_MANAGE_MESSAGES | PERM_SEND_TTS_MESSAGES
# What a typical invite link grants a chat bot: enough to read and answer, nothing that pings everyone.
BOT_ROLE_PERMISSIONS = (
    PERM_VIEW_CHANNEL | PERM_SEND_MESSAGES | PERM_READ_MESSAGE_HISTORY | PERM_EMBED_LINKS | PERM_ADD_REACTIONS
)

CHANNEL_TYPE_GUILD_TEXT = 0
CHANNEL_TYPE_DM = 1
CHANNEL_TYPE_GUILD_CATEGORY = 4

MESSAGE_TYPE_DEFAULT = 0
MESSAGE_TYPE_REPLY = 19

USER_MENTION = re.compile(r"<@!?(\d{1,20})>")
ROLE_MENTION = re.compile(r"<@&(\d{1,20})>")
EVERYONE_MENTION = re.compile(r"@(everyone|here)\b")

MAX_STORED_MESSAGES_PER_CHANNEL = 500


class SnowflakeFactory:
    """Makes ids the way Discord does: milliseconds since 2015 in the top bits, a counter in the low 12."""

    def __init__(self, worker_id: int = 1, process_id: int = 0) -> None:
        self._worker_id = worker_id & 0x1F
        self._process_id = process_id & 0x1F
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def new(self) -> str:
        with self._lock:
            increment = next(self._counter) & 0xFFF
        elapsed_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((elapsed_ms << 22) | (self._worker_id << 17) | (self._process_id << 12) | increment)


def iso_timestamp(moment: float | None = None) -> str:
    """Discord's timestamp format: ISO 8601 with microseconds and an explicit +00:00 offset."""
    when = datetime.fromtimestamp(time.time() if moment is None else moment, UTC)
    return when.isoformat(timespec="microseconds")


def bucket_hash(route_template: str) -> str:
    """An opaque, stable bucket id per route, like the one in Discord's X-RateLimit-Bucket header."""
    return hashlib.sha256(route_template.encode()).hexdigest()[:32]


@dataclass
class User:
    id: str
    username: str
    discriminator: str = "0"
    global_name: str | None = None
    bot: bool = False

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "username": self.username,
            "discriminator": self.discriminator,
            "global_name": self.global_name,
            "avatar": None,
            "avatar_decoration_data": None,
            "banner": None,
            "accent_color": None,
            "public_flags": 0,
            "flags": 0,
            "primary_guild": None,
            "collectibles": None,
            "clan": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class Member:
    user: User
    role_ids: list[str] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_timestamp)

    def payload(self, *, with_user: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": list(self.role_ids),
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        return data


@dataclass
class Role:
    id: str
    name: str
    permissions: int
    position: int
    managed: bool = False
    mentionable: bool = False
    bot_id: str | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": self.bot_id}
        return data


@dataclass
class Overwrite:
    target_id: str
    target_type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {"id": self.target_id, "type": self.target_type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass
class Channel:
    id: str
    name: str
    type: int
    guild_id: str | None
    position: int = 0
    parent_id: str | None = None
    overwrites: list[Overwrite] = field(default_factory=list)
    recipient: User | None = None
    last_message_id: str | None = None
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_STORED_MESSAGES_PER_CHANNEL))

    def payload(self) -> dict[str, Any]:
        if self.type == CHANNEL_TYPE_DM:
            return {
                "id": self.id,
                "type": self.type,
                "last_message_id": self.last_message_id,
                "flags": 0,
                "recipients": [self.recipient.payload()] if self.recipient else [],
            }
        data: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "guild_id": self.guild_id,
            "name": self.name,
            "position": self.position,
            "parent_id": self.parent_id,
            "permission_overwrites": [overwrite.payload() for overwrite in self.overwrites],
            "flags": 0,
        }
        if self.type == CHANNEL_TYPE_GUILD_TEXT:
            data.update(
                topic=None,
                nsfw=False,
                last_message_id=self.last_message_id,
                rate_limit_per_user=0,
                default_thread_rate_limit_per_user=0,
                icon_emoji=None,
                theme_color=None,
            )
        return data

    def find_message(self, message_id: str) -> dict[str, Any] | None:
        return next((message for message in self.messages if message["id"] == message_id), None)


class World:
    """Everything the emulated Discord knows about, with the derived values Discord computes on the server."""

    def __init__(self, *, bot_username: str, refuse_message_content: bool) -> None:
        self.snowflakes = SnowflakeFactory()
        self.refuse_message_content = refuse_message_content
        self.bot = User(self.snowflakes.new(), bot_username, discriminator="4821", bot=True)
        self.owner = User(self.snowflakes.new(), "guild-owner", global_name="Guild Owner")
        self.default_user = User(self.snowflakes.new(), "alice", global_name="Alice")
        self.other_bot = User(self.snowflakes.new(), "another-bot", discriminator="1337", bot=True)
        self.users: dict[str, User] = {
            user.id: user for user in (self.bot, self.owner, self.default_user, self.other_bot)
        }
        self.guild_id = self.snowflakes.new()
        self.guild_name = "Emulated Guild"
        # Discord gives the @everyone role the guild's own id.
        self.everyone_role = Role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0)
        self.moderator_role = Role(self.snowflakes.new(), "Moderator", MODERATOR_PERMISSIONS, 1, mentionable=True)
        self.bot_role = Role(self.snowflakes.new(), bot_username, BOT_ROLE_PERMISSIONS, 2, managed=True,
                             bot_id=self.bot.id)
        self.roles: dict[str, Role] = {
            role.id: role for role in (self.everyone_role, self.moderator_role, self.bot_role)
        }
        self.members: dict[str, Member] = {
            self.bot.id: Member(self.bot, [self.bot_role.id]),
            self.owner.id: Member(self.owner, [self.moderator_role.id]),
            self.default_user.id: Member(self.default_user),
            self.other_bot.id: Member(self.other_bot),
        }
        self.category = Channel(self.snowflakes.new(), "Text Channels", CHANNEL_TYPE_GUILD_CATEGORY, self.guild_id)
        self.text_channel = Channel(self.snowflakes.new(), "general", CHANNEL_TYPE_GUILD_TEXT, self.guild_id,
                                    position=0, parent_id=self.category.id)
        # A channel the bot may read but not write, so a client can meet a real 403 Missing Permissions.
        self.read_only_channel = Channel(
            self.snowflakes.new(), "announcements", CHANNEL_TYPE_GUILD_TEXT, self.guild_id, position=1,
            parent_id=self.category.id,
            overwrites=[Overwrite(self.bot_role.id, 0, deny=PERM_SEND_MESSAGES)],
        )
        self.channels: dict[str, Channel] = {
            channel.id: channel for channel in (self.category, self.text_channel, self.read_only_channel)
        }
        self.application_id = self.bot.id
        self.created_at = time.time()
        # The ordinary member's direct-message channel with the bot, so DMs can be posted without setup.
        self.dm_channel = self.open_dm(self.default_user.id)

    # -- derived values -------------------------------------------------------------------------------------------

    @property
    def application_flags(self) -> int:
        flags = APP_FLAG_GATEWAY_PRESENCE_LIMITED | APP_FLAG_GATEWAY_GUILD_MEMBERS_LIMITED
        if not self.refuse_message_content:
            flags |= APP_FLAG_GATEWAY_MESSAGE_CONTENT_LIMITED
        return flags

    def refused_intents(self, intents: int) -> list[str]:
        refused = []
        if self.refuse_message_content and intents & INTENT_MESSAGE_CONTENT:
            refused.append(PRIVILEGED_INTENTS[INTENT_MESSAGE_CONTENT])
        return refused

    def user_for(self, user_id: str) -> User:
        """The user with that id; an unknown id becomes a new guild member, as if they had just joined."""
        if user_id not in self.users:
            user = User(user_id, f"user-{user_id[-6:]}")
            self.users[user_id] = user
            self.members[user_id] = Member(user)
        return self.users[user_id]

    def permissions_in(self, user_id: str, channel: Channel, role_ids: list[str] | None = None) -> int:
        """Discord's permission resolution: roles, then @everyone, role and member overwrites of the channel."""
        if channel.guild_id is None:
            return EVERYONE_PERMISSIONS | PERM_SEND_TTS_MESSAGES | PERM_MENTION_EVERYONE
        if user_id == self.owner.id:
            return ALL_PERMISSIONS
        if role_ids is None:
            member = self.members.get(user_id)
            role_ids = member.role_ids if member else []
        permissions = self.everyone_role.permissions
        for role_id in role_ids:
            role = self.roles.get(role_id)
            if role:
                permissions |= role.permissions
        if permissions & PERM_ADMINISTRATOR:
            return ALL_PERMISSIONS
        for overwrite in channel.overwrites:
            if overwrite.target_id == self.everyone_role.id:
                permissions = (permissions & ~overwrite.deny) | overwrite.allow
        allow = deny = 0
        for overwrite in channel.overwrites:
            if overwrite.target_type == 0 and overwrite.target_id in role_ids:
                allow |= overwrite.allow
                deny |= overwrite.deny
        permissions = (permissions & ~deny) | allow
        for overwrite in channel.overwrites:
            if overwrite.target_type == 1 and overwrite.target_id == user_id:
                permissions = (permissions & ~overwrite.deny) | overwrite.allow
        return permissions

    def open_dm(self, recipient_id: str) -> Channel:
        recipient = self.user_for(recipient_id)
        for channel in self.channels.values():
            if channel.type == CHANNEL_TYPE_DM and channel.recipient and channel.recipient.id == recipient_id:
                return channel
        channel = Channel(self.snowflakes.new(), "", CHANNEL_TYPE_DM, None, recipient=recipient)
        self.channels[channel.id] = channel
        return channel

    # -- payloads -------------------------------------------------------------------------------------------------

    def bot_user_payload(self) -> dict[str, Any]:
        return {**self.bot.payload(), "verified": True, "mfa_enabled": False, "email": None, "locale": "en-US",
                "bio": "", "premium_type": 0}

    def application_payload(self) -> dict[str, Any]:
        return {
            "id": self.application_id,
            "name": self.bot.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": False,
            "bot_require_code_grant": False,
            "verify_key": hashlib.sha256(self.application_id.encode()).hexdigest(),
            "flags": self.application_flags,
            "owner": self.owner.payload(),
            "team": None,
            "bot": self.bot.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "event_webhooks_url": None,
            "event_webhooks_status": 1,
            "integration_types_config": {"0": {}},
            "approximate_guild_count": 1,
            "approximate_user_install_count": 0,
            "tags": [],
            "is_monetized": False,
        }

    def guild_payload(self, *, include_all_members: bool, large_threshold: int) -> dict[str, Any]:
        members = list(self.members.values())
        # Without the members intent Discord only sends the bot's own member (and anyone in voice).
        shown_members = members if include_all_members else [self.members[self.bot.id]]
        return {
            "id": self.guild_id,
            "name": self.guild_name,
            "icon": None,
            "icon_hash": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": self.owner.id,
            "application_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": self.text_channel.id,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": False,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "max_members": 25_000_000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "roles": [role.payload() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "incidents_data": None,
            "hub_type": None,
            "latest_onboarding_question_id": None,
            "inventory_settings": None,
            "home_header": None,
            "version": int(self.created_at * 1000),
            "lazy": True,
            "large": len(members) > large_threshold,
            "unavailable": False,
            "joined_at": self.members[self.bot.id].joined_at,
            "member_count": len(members),
            "members": [member.payload() for member in shown_members],
            "channels": [channel.payload() for channel in self.channels.values() if channel.guild_id],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
        }

    def mentioned_users(self, content: str) -> list[User]:
        """Users named by <@id> or <@!id>, first appearance first; ids of nobody are dropped like Discord does."""
        found: list[User] = []
        for user_id in USER_MENTION.findall(content):
            user = self.users.get(user_id)
            if user is not None and user not in found:
                found.append(user)
        return found

    def mentioned_role_ids(self, content: str) -> list[str]:
        role_ids: list[str] = []
        for role_id in ROLE_MENTION.findall(content):
            if role_id in self.roles and role_id != self.everyone_role.id and role_id not in role_ids:
                role_ids.append(role_id)
        return role_ids

    def mention_user_payload(self, user: User, channel: Channel) -> dict[str, Any]:
        data = user.payload()
        member = self.members.get(user.id)
        if channel.guild_id and member is not None:
            data["member"] = member.payload(with_user=False)
        return data
